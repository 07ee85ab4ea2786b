"""The client report: a 16:9 PowerPoint deck with matplotlib charts, built in memory.

`build_report(result, household, assumptions)` returns the PPTX bytes; storing them is the
caller's business. `style` holds the palette and number formats, `charts` the matplotlib
figures, `slides` the layout helpers and `deck` the slides themselves.
"""

from __future__ import annotations

from apps.allocator.report.deck import build_report

__all__ = ["build_report"]
