"""The client deck: eight 16:9 slides telling the household what the optimiser found."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime

from pptx import Presentation
from pptx.enum.shapes import MSO_SHAPE
from pptx.util import Emu, Inches

from apps.allocator.assumptions import Assumptions
from apps.allocator.household import Household
from apps.allocator.optimizer import OptimizationResult
from apps.allocator.report.charts import allocation_chart, drawdown_chart, fan_chart, grid_chart
from apps.allocator.report.slides import add_kpi, add_slide, add_table, add_text
from apps.allocator.report.style import (
    CORAL,
    INK,
    MARGIN,
    MUTED,
    NAVY,
    SLIDE_HEIGHT,
    SLIDE_WIDTH,
    TEAL,
    dollars,
    percent,
    rgb,
    short_dollars,
)


def _allocation_words(result: OptimizationResult, index: int) -> str:
    weights = result.weights[index]
    return " · ".join(f"{percent(float(w))} {label}" for label, w in zip(result.labels, weights, strict=True) if w > 0)


def _household_rows(result: OptimizationResult, household: Household) -> list[list[str]]:
    params = result.params
    rows = [
        ["Item", "Value"],
        ["Age today / at retirement", f"{household.current_age} / {household.retirement_age}"],
        [
            "Taxable / tax-deferred / tax-free",
            " / ".join(
                dollars(v) for v in (household.assets.taxable, household.assets.tax_deferred, household.assets.tax_free)
            ),
        ],
        ["Total investable assets", dollars(household.assets.total)],
        ["Yearly saving until retirement", dollars(household.annual_contribution)],
        [
            "Yearly spending in retirement",
            f"{percent(params.payout_rate, 1)} of the portfolio at retirement"
            if params.payout_rate is not None
            else dollars(household.annual_spending),
        ],
    ]
    for income in household.other_income:
        until = f" to {income.end_age}" if income.end_age is not None else ""
        rows.append([f"Other income from age {income.start_age}{until}", f"{dollars(income.annual_amount)} a year"])
    for goal in household.goals:
        rows.append([f"Goal in {goal.years_from_now} years", dollars(goal.amount)])
    rows.append(["Plan length / inflation", f"{params.horizon_years} years / {percent(params.inflation, 1)}"])
    return rows


def build_report(
    result: OptimizationResult, household: Household, assumptions: Assumptions, *, as_of: date | None = None
) -> bytes:
    """Build the client deck for an optimisation result and return the PPTX file's bytes."""
    as_of = as_of or datetime.now(UTC).date()
    deck = Presentation()
    deck.slide_width, deck.slide_height = SLIDE_WIDTH, SLIDE_HEIGHT
    best = result.recommended
    metrics = result.metrics
    success = float(result.success_probability[best])
    end_age = household.current_age + result.params.horizon_years
    content_width = Emu(SLIDE_WIDTH - 2 * MARGIN)

    # 1. Title
    slide = deck.slides.add_slide(deck.slide_layouts[6])
    band = slide.shapes.add_shape(MSO_SHAPE.RECTANGLE, 0, 0, SLIDE_WIDTH, Inches(4.2))
    band.fill.solid()
    band.fill.fore_color.rgb = rgb(NAVY)
    band.line.fill.background()
    add_text(
        slide,
        MARGIN,
        Inches(1.4),
        content_width,
        Inches(1),
        "Household allocation review",
        size=44,
        bold=True,
        colour="#FFFFFF",
    )
    add_text(
        slide,
        MARGIN,
        Inches(2.5),
        content_width,
        Inches(1.2),
        f"{len(result.weights):,} allocations tested on {result.n_sims:,} market scenarios · {as_of:%d %B %Y}",
        size=20,
        colour="#DCE3EA",
    )
    add_text(slide, MARGIN, Inches(4.6), content_width, Inches(0.6), "Recommended allocation", size=16, colour=MUTED)
    add_text(
        slide,
        MARGIN,
        Inches(5.05),
        content_width,
        Inches(0.8),
        _allocation_words(result, best),
        size=26,
        bold=True,
        colour=NAVY,
    )
    add_text(
        slide,
        MARGIN,
        Inches(5.9),
        content_width,
        Inches(0.6),
        f"In {percent(success)} of the scenarios the plan never runs out of money up to age {end_age}.",
        size=18,
        colour=INK,
    )

    # 2. Household and headline figures
    slide = add_slide(deck, "Your household and the headline figures", 2)
    rows = _household_rows(result, household)
    add_table(slide, MARGIN, Inches(1.4), Inches(7.2), rows, column_widths=(0.52, 0.48), size=13)
    kpi_left = MARGIN + Inches(7.7)
    add_kpi(slide, kpi_left, Inches(1.4), percent(success), "chance the plan never runs out", TEAL)
    add_kpi(
        slide,
        kpi_left + Inches(2.95),
        Inches(1.4),
        short_dollars(float(metrics.terminal_median[best])),
        f"median wealth at age {end_age}",
    )
    add_kpi(
        slide,
        kpi_left,
        Inches(2.85),
        short_dollars(float(metrics.terminal_p5[best])),
        f"wealth at age {end_age} in a bad case (1 in 20)",
        CORAL,
    )
    add_kpi(
        slide,
        kpi_left + Inches(2.95),
        Inches(2.85),
        short_dollars(float(metrics.expected_shortfall[best])),
        "average spending left unfunded",
    )
    add_text(
        slide,
        kpi_left,
        Inches(4.35),
        Inches(5.7),
        Inches(1.6),
        "All amounts are in today's money: they already allow for inflation, so $1 here buys what $1 buys today.",
        size=13,
        colour=MUTED,
    )

    # 3. Assumptions
    slide = add_slide(deck, "Capital-market assumptions", 3)
    names = assumptions.labels
    rows = [["Asset class", "Expected return", "Volatility"]] + [
        [label, percent(mean, 1), percent(vol, 1)]
        for label, mean, vol in zip(names, assumptions.expected_returns, assumptions.volatilities, strict=True)
    ]
    add_table(slide, MARGIN, Inches(1.4), Inches(5.4), rows, column_widths=(0.46, 0.27, 0.27), size=14)
    rows = [["Correlation", *names]] + [
        [label, *(f"{x:.2f}" for x in row)] for label, row in zip(names, assumptions.correlation, strict=True)
    ]
    add_table(slide, MARGIN + Inches(6.0), Inches(1.4), Inches(6.1), rows, size=12)
    add_text(
        slide,
        MARGIN,
        Inches(4.1),
        content_width,
        Inches(2.2),
        "Yearly figures before inflation: the expected return is the average yearly return and the volatility how "
        "far a typical year strays from it. Correlations near 1 mean two classes tend to move together; near 0, "
        "independently." + (f"\nAssumption set {assumptions.version}." if assumptions.version else ""),
        size=13,
        colour=MUTED,
    )

    # 4. Recommended allocation
    slide = add_slide(deck, "The recommended allocation", 4)
    slide.shapes.add_picture(
        allocation_chart(result.labels, [float(w) for w in result.weights[best]]),
        MARGIN,
        Inches(1.35),
        height=Inches(5.4),
    )
    rows = [
        ["Outcome", "Figure"],
        ["Chance the plan never runs out", percent(success, 1)],
        [f"Median wealth at age {end_age}", dollars(metrics.terminal_median[best])],
        ["Bad case (1 in 20)", dollars(metrics.terminal_p5[best])],
        ["Good case (1 in 20)", dollars(metrics.terminal_p95[best])],
        ["Average spending left unfunded", dollars(metrics.expected_shortfall[best])],
        ["Typical largest fall", percent(float(metrics.max_drawdown_median[best]))],
        ["Largest fall, 1 in 20", percent(float(metrics.max_drawdown_p95[best]))],
    ]
    add_table(slide, MARGIN + Inches(6.9), Inches(1.45), Inches(5.2), rows, column_widths=(0.62, 0.38), size=13)
    add_text(
        slide,
        MARGIN + Inches(6.9),
        Inches(4.7),
        Inches(5.2),
        Inches(1.8),
        "Chosen for the highest chance of never running out of money; among equally safe allocations, the one with "
        "the least unfunded spending, then the highest median wealth.",
        size=13,
        colour=MUTED,
    )

    # 5. The grid
    slide = add_slide(deck, "Success probability across every allocation", 5)
    slide.shapes.add_picture(grid_chart(result), MARGIN, Inches(1.35), width=Emu(content_width))
    add_text(
        slide,
        MARGIN,
        Inches(6.1),
        content_width,
        Inches(0.8),
        f"Left: the best chance of success for each mix of equity and bonds. Right: each dot is one of the "
        f"{len(result.weights):,} allocations; the line joins those no other allocation beats on both safety "
        "and median wealth.",
        size=12,
        colour=MUTED,
    )

    # 6. Fan chart
    slide = add_slide(deck, "Your wealth over time", 6)
    slide.shapes.add_picture(fan_chart(result, household), MARGIN, Inches(1.35), width=Emu(content_width))
    depleted = float(result.detail.depleted_share[-1])
    add_text(
        slide,
        MARGIN,
        Inches(6.35),
        content_width,
        Inches(0.6),
        "The dark line is the middle outcome; half the scenarios fall in the darker band, nine in ten in the "
        f"lighter one. Money ran short at some point in {percent(depleted, 1)} of the scenarios.",
        size=12,
        colour=MUTED,
    )

    # 7. Drawdowns
    slide = add_slide(deck, "How deep the falls can be", 7)
    slide.shapes.add_picture(drawdown_chart(result), MARGIN, Inches(1.35), height=Inches(5.4))
    add_text(
        slide,
        MARGIN + Inches(8.6),
        Inches(1.6),
        Inches(3.5),
        Inches(4.5),
        "Every portfolio falls from time to time. This is how far the recommended allocation fell from its "
        "previous high at its worst moment in each scenario.\n\nKnowing this in advance helps to stay the course: "
        "selling after a fall turns a paper loss into a real one.",
        size=14,
        colour=INK,
    )

    # 8. Method and limitations
    slide = add_slide(deck, "How this was worked out, and its limits", 8)
    method = (
        f"• We simulated {result.n_sims:,} possible paths for markets over the next "
        f"{result.params.horizon_years} years, "
        "using the assumptions on slide 3, and ran every allocation through the same paths so they compare fairly.\n"
        "• Each year: savings go in until retirement, spending comes out after it, other income and goals are "
        "counted in their years, and the portfolio "
        + (
            "is rebalanced back to its target mix.\n"
            if result.params.rebalance
            else "is left to drift (no rebalancing).\n"
        )
        + "• Success means the money never ran out in any year of the plan.\n"
        "Limits, in plain words:\n"
        "• Taxes, fees and account types are not modelled; all accounts are treated as one pot.\n"
        "• Inflation is a fixed rate; markets are drawn year by year, so falls within a year are not seen.\n"
        "• Real markets can behave worse than any assumption: this is a guide for a conversation, not a promise."
    )
    add_text(slide, MARGIN, Inches(1.45), content_width, Inches(5.3), method, size=16)

    buffer = io.BytesIO()
    deck.save(buffer)
    return buffer.getvalue()
