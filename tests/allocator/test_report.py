"""The PPTX report opens again with python-pptx and carries its charts."""

from __future__ import annotations

import io
from datetime import date

import pytest
from pptx import Presentation
from pptx.enum.shapes import MSO_SHAPE_TYPE

from apps.allocator.assumptions import Assumptions
from apps.allocator.household import parse_request
from apps.allocator.optimizer import optimize
from apps.allocator.report import build_report
from tests.allocator.conftest import example_body


@pytest.fixture(scope="module")
def deck_bytes() -> bytes:
    body = example_body()
    body["params"].update(n_sims=300, n_jobs=1, grid_step=0.1)
    request = parse_request(body)
    from apps.allocator.assumptions import load_assumptions

    assumptions: Assumptions = load_assumptions()
    result = optimize(request.household, request.params, assumptions)
    return build_report(result, request.household, assumptions, as_of=date(2025, 3, 14))


def slide_texts(slide: object) -> str:
    return " ".join(shape.text_frame.text for shape in slide.shapes if shape.has_text_frame)  # type: ignore[attr-defined]


def test_report_opens_with_eight_slides_and_charts(deck_bytes: bytes) -> None:
    deck = Presentation(io.BytesIO(deck_bytes))
    slides = list(deck.slides)
    pictures = [[shape for shape in slide.shapes if shape.shape_type == MSO_SHAPE_TYPE.PICTURE] for slide in slides]

    assert len(slides) == 8
    assert [len(p) for p in pictures] == [0, 0, 0, 1, 1, 1, 1, 0]
    for chart in (p[0] for p in pictures if p):
        assert chart.image.content_type == "image/png"
        assert chart.image.blob.startswith(b"\x89PNG")
        assert chart.image.size[0] >= 800


def test_report_speaks_plain_words(deck_bytes: bytes) -> None:
    slides = list(Presentation(io.BytesIO(deck_bytes)).slides)

    assert "Household allocation review" in slide_texts(slides[0])
    assert "14 March 2025" in slide_texts(slides[0])
    assert "Total investable assets" in " ".join(
        cell.text for shape in slides[1].shapes if shape.has_table for row in shape.table.rows for cell in row.cells
    )
    assert "Capital-market assumptions" in slide_texts(slides[2])
    assert "Taxes, fees and account types are not modelled" in slide_texts(slides[7])
