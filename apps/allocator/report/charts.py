"""The report's charts, drawn on matplotlib `Figure` objects with the Agg canvas (no pyplot).

Nothing global changes, so concurrent builds in one process do not interfere. Each chart
returns a PNG in memory, ready for `slide.shapes.add_picture`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

from apps.allocator.household import Household
from apps.allocator.optimizer import OptimizationResult
from apps.allocator.report.style import CLASS_COLOURS, CORAL, DPI, INK, LIGHT, NAVY, SLATE, TEAL, percent, short_dollars


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _style(axes: object) -> None:
    # Light, quiet axes: the data carries the colour.
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)  # type: ignore[attr-defined]
    for side in ("left", "bottom"):
        axes.spines[side].set_color(SLATE)  # type: ignore[attr-defined]
    axes.tick_params(colors=INK, labelsize=10)  # type: ignore[attr-defined]
    axes.grid(True, color=LIGHT, linewidth=0.8)  # type: ignore[attr-defined]
    axes.set_axisbelow(True)  # type: ignore[attr-defined]


def _png(figure: Figure) -> io.BytesIO:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    buffer.seek(0)
    return buffer


def allocation_chart(labels: Sequence[str], weights: Sequence[float]) -> io.BytesIO:
    figure = _figure(5.4, 5.4)
    axes = figure.add_subplot()
    shown = [
        (label, weight, CLASS_COLOURS[i % len(CLASS_COLOURS)])
        for i, (label, weight) in enumerate(zip(labels, weights, strict=True))
        if weight > 0
    ]
    wedges, _ = axes.pie(
        [w for _, w, _ in shown],
        colors=[c for _, _, c in shown],
        startangle=90,
        counterclock=False,
        wedgeprops={"width": 0.38, "edgecolor": "white", "linewidth": 2},
    )
    axes.legend(
        wedges,
        [f"{label}  {percent(weight)}" for label, weight, _ in shown],
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=2,
        frameon=False,
        fontsize=12,
    )
    axes.set_aspect("equal")
    return _png(figure)


def grid_chart(result: OptimizationResult) -> io.BytesIO:
    figure = _figure(12.0, 4.6)
    heat, frontier = figure.subplots(1, 2, width_ratios=(1, 1.25))
    success = result.success_probability
    weights = result.weights
    # The heat map folds the grid onto two axes a client reads at once: the equity share (every
    # class with "equity" in its name) and the bond share; each cell shows the best success
    # probability among the allocations that share those two figures.
    names = result.asset_classes
    equity = weights[:, [i for i, n in enumerate(names) if "equity" in n]].sum(axis=1)
    bonds = weights[:, [i for i, n in enumerate(names) if "bond" in n]].sum(axis=1)
    steps = result.params.grid_steps
    cells = np.full((steps + 1, steps + 1), np.nan)
    for e, b, s in zip(np.rint(equity * steps).astype(int), np.rint(bonds * steps).astype(int), success, strict=True):
        cells[b, e] = s if np.isnan(cells[b, e]) else max(cells[b, e], s)
    image = heat.imshow(
        cells,
        origin="lower",
        extent=(0, 1, 0, 1),
        cmap="YlGnBu",
        vmin=max(0.0, float(np.nanmin(cells)) - 0.02),
        vmax=1.0,
        aspect="auto",
    )
    heat.scatter(
        [equity[result.recommended]],
        [bonds[result.recommended]],
        marker="*",
        s=260,
        color=CORAL,
        edgecolors="white",
        zorder=3,
    )
    heat.set_xlabel("Equity share", fontsize=11, color=INK)
    heat.set_ylabel("Bond share (the rest in cash)", fontsize=11, color=INK)
    heat.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    heat.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    heat.set_title("Probability of success", fontsize=12, color=INK, loc="left")
    heat.tick_params(labelsize=10, colors=INK)
    bar = figure.colorbar(image, ax=heat, format=PercentFormatter(1.0, decimals=0))
    bar.ax.tick_params(labelsize=9)

    median = result.metrics.terminal_median
    _style(frontier)
    frontier.scatter(median, success, s=10, color=SLATE, alpha=0.35, linewidths=0, label="All allocations")
    front = result.efficient
    frontier.plot(
        median[front], success[front], color=TEAL, linewidth=2.2, marker="o", markersize=4, label="Efficient set"
    )
    frontier.scatter(
        [median[result.recommended]],
        [success[result.recommended]],
        marker="*",
        s=320,
        color=CORAL,
        edgecolors="white",
        zorder=4,
        label="Recommended",
    )
    frontier.set_xlabel("Median wealth at the end, in today's money", fontsize=11, color=INK)
    frontier.set_ylabel("Probability of success", fontsize=11, color=INK)
    frontier.xaxis.set_major_formatter(FuncFormatter(short_dollars))
    frontier.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    frontier.set_title("Safety against upside", fontsize=12, color=INK, loc="left")
    frontier.legend(frameon=False, fontsize=10, loc="lower left")
    return _png(figure)


def fan_chart(result: OptimizationResult, household: Household) -> io.BytesIO:
    detail = result.detail
    figure = _figure(12.0, 4.9)
    axes = figure.add_subplot()
    _style(axes)
    ages = detail.ages
    p5, p25, p50, p75, p95 = detail.wealth_bands
    axes.fill_between(ages, p5, p95, color=TEAL, alpha=0.18, linewidth=0, label="5th–95th percentile")
    axes.fill_between(ages, p25, p75, color=TEAL, alpha=0.38, linewidth=0, label="25th–75th percentile")
    axes.plot(ages, p50, color=NAVY, linewidth=2.5, label="Median")
    if ages[0] <= household.retirement_age <= ages[-1]:
        axes.axvline(household.retirement_age, color=CORAL, linestyle="--", linewidth=1.4)
        axes.annotate(
            "Retirement",
            (household.retirement_age, float(np.max(p95))),
            xytext=(6, -4),
            textcoords="offset points",
            color=CORAL,
            fontsize=10,
            va="top",
        )
    axes.set_xlim(ages[0], ages[-1])
    axes.set_ylim(bottom=0)
    axes.set_xlabel("Age", fontsize=11, color=INK)
    axes.set_ylabel("Portfolio, in today's money", fontsize=11, color=INK)
    axes.yaxis.set_major_formatter(FuncFormatter(short_dollars))
    axes.legend(frameon=False, fontsize=10, loc="upper left")
    return _png(figure)


def drawdown_chart(result: OptimizationResult) -> io.BytesIO:
    drawdowns = result.detail.max_drawdowns.astype(np.float64)
    figure = _figure(8.2, 4.6)
    axes = figure.add_subplot()
    _style(axes)
    upper = max(0.05, float(np.percentile(drawdowns, 99.5)))
    axes.hist(
        drawdowns,
        bins=40,
        range=(0, upper),
        color=NAVY,
        alpha=0.85,
        edgecolor="white",
        linewidth=0.5,
        weights=np.full(drawdowns.shape, 1 / drawdowns.size),
    )
    for value, label, colour in (
        (result.metrics.max_drawdown_median[result.recommended], "median", TEAL),
        (result.metrics.max_drawdown_p95[result.recommended], "1 in 20 worse than", CORAL),
    ):
        axes.axvline(value, color=colour, linewidth=2)
        axes.annotate(
            f"{label} {percent(float(value))}",
            (float(value), 1),
            xycoords=("data", "axes fraction"),
            xytext=(5, -4),
            textcoords="offset points",
            color=colour,
            fontsize=10,
            va="top",
        )
    axes.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes.set_xlabel("Largest peak-to-trough fall over the plan (year ends, after inflation)", fontsize=11, color=INK)
    axes.set_ylabel("Share of scenarios", fontsize=11, color=INK)
    return _png(figure)


# --- slides -----------------------------------------------------------------------------------
