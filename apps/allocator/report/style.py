"""The report's look: one palette, one type scale, and the number formats every slide shares."""

from __future__ import annotations

from decimal import Decimal

from pptx.dml.color import RGBColor
from pptx.util import Inches

NAVY = "#1F3A5F"
TEAL = "#2A9D8F"
GOLD = "#E9C46A"
SLATE = "#8D99AE"
CORAL = "#E76F51"
INK = "#263238"
MUTED = "#6B7785"
LIGHT = "#EEF2F6"
# Asset classes take the palette in order; more than five classes reuse it.
CLASS_COLOURS = (NAVY, TEAL, GOLD, SLATE, "#A8DADC")
FONT = "Calibri"
CHART_FONT = "DejaVu Sans"
DPI = 150
SLIDE_WIDTH, SLIDE_HEIGHT = Inches(13.333), Inches(7.5)
MARGIN = Inches(0.6)


def rgb(hex_colour: str) -> RGBColor:
    value = hex_colour.lstrip("#")
    return RGBColor(int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))  # type: ignore[no-untyped-call]


def dollars(value: float | Decimal) -> str:
    return f"${float(value):,.0f}"


def short_dollars(value: float, _position: float | None = None) -> str:
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"${value / 1e6:.1f}M"
    if magnitude >= 1e3:
        return f"${value / 1e3:.0f}k"
    return f"${value:.0f}"


def percent(value: float, digits: int = 0) -> str:
    return f"{100 * value:.{digits}f}%"
