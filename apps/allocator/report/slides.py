"""Slide building blocks: titled pages, text boxes, tables and headline figures."""

from __future__ import annotations

from collections.abc import Sequence

from pptx.enum.shapes import MSO_SHAPE
from pptx.enum.text import PP_ALIGN
from pptx.presentation import Presentation as PresentationType
from pptx.slide import Slide
from pptx.util import Emu, Inches, Pt

from apps.allocator.report.style import CORAL, FONT, INK, LIGHT, MARGIN, MUTED, NAVY, SLIDE_WIDTH, rgb


def add_text(
    slide: Slide,
    left: int,
    top: int,
    width: int,
    height: int,
    text: str,
    *,
    size: int = 16,
    bold: bool = False,
    colour: str = INK,
    align: PP_ALIGN = PP_ALIGN.LEFT,
) -> None:
    frame = slide.shapes.add_textbox(Emu(left), Emu(top), Emu(width), Emu(height)).text_frame
    frame.word_wrap = True
    for number, line in enumerate(text.split("\n")):
        paragraph = frame.paragraphs[0] if number == 0 else frame.add_paragraph()
        paragraph.alignment = align
        run = paragraph.add_run()
        run.text = line
        run.font.name = FONT
        run.font.size = Pt(size)
        run.font.bold = bold
        run.font.color.rgb = rgb(colour)


def add_slide(deck: PresentationType, title: str, page: int) -> Slide:
    slide: Slide = deck.slides.add_slide(deck.slide_layouts[6])  # blank: we lay out every slide alike
    add_text(slide, MARGIN, Inches(0.35), SLIDE_WIDTH - 2 * MARGIN, Inches(0.7), title, size=28, bold=True, colour=NAVY)
    rule = slide.shapes.add_shape(MSO_SHAPE.RECTANGLE, MARGIN, Inches(1.05), Inches(1.2), Inches(0.06))
    rule.fill.solid()
    rule.fill.fore_color.rgb = rgb(CORAL)
    rule.line.fill.background()
    add_text(
        slide,
        MARGIN,
        Inches(7.0),
        Inches(9),
        Inches(0.3),
        "Household allocation review · simulated outcomes, not guarantees",
        size=10,
        colour=MUTED,
    )
    add_text(
        slide,
        SLIDE_WIDTH - MARGIN - Inches(1),
        Inches(7.0),
        Inches(1),
        Inches(0.3),
        str(page),
        size=10,
        colour=MUTED,
        align=PP_ALIGN.RIGHT,
    )
    return slide


def add_table(
    slide: Slide,
    left: int,
    top: int,
    width: int,
    rows: Sequence[Sequence[str]],
    *,
    column_widths: Sequence[float] | None = None,
    size: int = 13,
) -> None:
    row_height = Inches(0.36)
    shape = slide.shapes.add_table(
        len(rows), len(rows[0]), Emu(left), Emu(top), Emu(width), Emu(row_height * len(rows))
    )
    table = shape.table
    if column_widths:
        for number, share in enumerate(column_widths):
            table.columns[number].width = Emu(int(width * share))
    for r, values in enumerate(rows):
        for c, value in enumerate(values):
            cell = table.cell(r, c)
            cell.fill.solid()  # type: ignore[no-untyped-call]
            cell.fill.fore_color.rgb = rgb(NAVY if r == 0 else ("#FFFFFF" if r % 2 else LIGHT))
            cell.margin_left = cell.margin_right = Inches(0.08)
            paragraph = cell.text_frame.paragraphs[0]
            paragraph.alignment = PP_ALIGN.LEFT if c == 0 else PP_ALIGN.RIGHT
            run = paragraph.add_run()
            run.text = value
            run.font.name = FONT
            run.font.size = Pt(size)
            run.font.bold = r == 0
            run.font.color.rgb = rgb("#FFFFFF" if r == 0 else INK)


def add_kpi(slide: Slide, left: int, top: int, value: str, caption: str, colour: str = NAVY) -> None:
    box = slide.shapes.add_shape(MSO_SHAPE.RECTANGLE, Emu(left), Emu(top), Inches(2.75), Inches(1.25))
    box.fill.solid()
    box.fill.fore_color.rgb = rgb(LIGHT)
    box.line.fill.background()
    add_text(
        slide,
        left + Inches(0.15),
        top + Inches(0.1),
        Inches(2.5),
        Inches(0.6),
        value,
        size=28,
        bold=True,
        colour=colour,
    )
    add_text(slide, left + Inches(0.15), top + Inches(0.72), Inches(2.5), Inches(0.5), caption, size=12, colour=MUTED)
