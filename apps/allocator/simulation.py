"""The household Monte Carlo model, vectorised over paths and candidate allocations.

Conventions (they are what the report's "method" slide says in plain words):

* **Real terms.** Inflation is a fixed rate, so every figure is carried in today's money: each
  year's gross return is divided by ``1 + inflation`` and every cash flow (contributions,
  spending, other income, goals) is constant in today's money, i.e. indexed to inflation.
* **Returns.** Annual gross returns per asset class are lognormal: ``(1 + m) * exp(s Z - s²/2)``
  with ``s² = ln(1 + v² / (1 + m)²)``, so the arithmetic mean is exactly ``m`` and the standard
  deviation exactly ``v`` (the assumptions' expected return and volatility), a portfolio can never
  lose more than everything, and a volatility of 0 gives exactly ``1 + m``. The normals ``Z`` are
  correlated with the assumptions' correlation matrix (applied to the log returns).
* **Common random numbers.** One set of scenarios, drawn from ``numpy.random.default_rng(seed)``,
  is shared by every candidate, so differences between candidates are the allocation's, not
  noise; any process regenerates the identical set from the seed.
* **A year.** At the start of year ``t`` (age ``current_age + t``) the net cash flow is applied:
  ``+ contribution`` while age < retirement_age, ``- spending`` from retirement_age on,
  ``+ other income`` while it pays, ``- goal`` in its year. If wealth would fall below zero the
  unmet part is a *shortfall* and wealth is floored at zero (later income may rebuild it). Then
  the portfolio earns the year's return: with rebalancing at the target weights; without, each
  class grows on its own (weights drift), new money is invested at the target weights and
  withdrawals are taken pro rata.
* **Payout rate.** When ``payout_rate`` is given it replaces ``annual_spending``: the withdrawal
  is ``payout_rate`` × the portfolio at the start of the first retirement year, then held
  constant in today's money (the "4 % rule"), so running out remains possible.
* **Metrics** per candidate: success = no shortfall in any year; expected shortfall = mean over
  all paths of the total unmet spending in today's money; terminal wealth percentiles in today's
  money; maximum drawdown = the largest peak-to-trough fall of the portfolio's inflation-adjusted
  return index at year ends (cash flows excluded, so it measures the allocation, not spending).

Arithmetic is float64 throughout. float32 was measured (1.4 s instead of 2.4 s for the
benchmark job, both far under the 10 s target) but loses cents to cancellation when spending
meets a large balance, and a zero-volatility plan should reproduce the hand computation to the
last cent. Only elementwise numpy operations touch the candidate axis and reductions run along
contiguous rows, so a candidate's metrics do not depend on which other candidates share its
chunk: that is what makes a run split across processes bit-identical to a single-process run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from apps.allocator.assumptions import Assumptions
from apps.allocator.household import Household, Params

FLOAT = np.float64
# Rows (candidates) per inner block: ~256k elements (2 MB) per state array keeps the half
# dozen arrays of the year loop inside the L3 cache.
BLOCK_ELEMENTS = 1 << 18
TERMINAL_PERCENTILES = (5.0, 50.0, 95.0)
DRAWDOWN_PERCENTILES = (50.0, 95.0)
BAND_PERCENTILES = (5.0, 25.0, 50.0, 75.0, 95.0)


@dataclass(frozen=True)
class CashFlows:
    """The deterministic net cash flow of each year in today's money, and the retirement year."""

    net: NDArray[np.float64]  # (horizon,) contributions + income - spending - goals
    retired: NDArray[np.bool_]  # (horizon,) age >= retirement_age
    retirement_year: int | None  # first retired year inside the horizon, None if never


@dataclass(frozen=True)
class Scenarios:
    """Real gross returns per year, asset class and path: shape (horizon, classes, n_sims)."""

    gross: NDArray[np.float64]


@dataclass(frozen=True)
class CandidateMetrics:
    """Metrics of a block of candidates; every array has one entry per candidate."""

    success_count: NDArray[np.int64]
    expected_shortfall: NDArray[np.float64]
    terminal_p5: NDArray[np.float64]
    terminal_median: NDArray[np.float64]
    terminal_p95: NDArray[np.float64]
    max_drawdown_median: NDArray[np.float64]
    max_drawdown_p95: NDArray[np.float64]

    @staticmethod
    def concatenate(parts: list[CandidateMetrics]) -> CandidateMetrics:
        return CandidateMetrics(
            **{
                name: np.concatenate([getattr(part, name) for part in parts])
                for name in CandidateMetrics.__dataclass_fields__
            }
        )


@dataclass(frozen=True)
class PathDetail:
    """Per-year and per-path figures of one allocation (the fan and drawdown charts)."""

    ages: NDArray[np.int64]  # (horizon + 1,) age at each year start; the last is the terminal age
    wealth_bands: NDArray[np.float64]  # (len(BAND_PERCENTILES), horizon + 1), today's money
    depleted_share: NDArray[np.float64]  # (horizon,) share of paths with a shortfall by that year
    max_drawdowns: NDArray[np.float64]  # (n_sims,) each path's maximum drawdown, 0..1
    terminal_wealth: NDArray[np.float64]  # (n_sims,)


def build_cash_flows(household: Household, params: Params) -> CashFlows:
    """Return each year's deterministic net flow (spending excluded when a payout rate applies)."""
    horizon = params.horizon_years
    ages = household.current_age + np.arange(horizon)
    retired = ages >= household.retirement_age
    net = np.where(retired, 0.0, float(household.annual_contribution))
    if params.payout_rate is None:
        net = net - np.where(retired, float(household.annual_spending), 0.0)
    for income in household.other_income:
        net = net + np.array([float(income.annual_amount) if income.pays_at(int(age)) else 0.0 for age in ages])
    for goal in household.goals:
        if goal.years_from_now < horizon:
            net[goal.years_from_now] -= float(goal.amount)
    retired_years = np.flatnonzero(retired)
    return CashFlows(
        net=net.astype(np.float64),
        retired=retired,
        retirement_year=int(retired_years[0]) if retired_years.size else None,
    )


@functools.lru_cache(maxsize=4)
def generate_scenarios(
    n_sims: int, horizon_years: int, inflation: float, seed: int, assumptions: Assumptions
) -> Scenarios:
    """Draw the common scenarios; cached so each process draws them once per run."""
    rng = np.random.default_rng(seed)
    n_classes = assumptions.n_classes
    normals = rng.standard_normal((horizon_years, n_classes, n_sims))
    # A factor L with L Lᵀ = correlation; eigen rather than Cholesky so a singular (but PSD)
    # matrix such as perfectly correlated classes still works.
    eigenvalues, eigenvectors = np.linalg.eigh(assumptions.correlation_matrix())
    factor = eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))
    # Elementwise rather than a BLAS matmul: BLAS kernels may sum in a thread-count-dependent
    # order, and the scenarios must be bit-identical in every process.
    correlated = np.zeros_like(normals)
    for i in range(n_classes):
        for j in range(n_classes):
            if factor[i, j] != 0.0:
                correlated[:, i, :] += factor[i, j] * normals[:, j, :]
    mean = np.array(assumptions.expected_returns)[None, :, None]
    vol = np.array(assumptions.volatilities)[None, :, None]
    log_sd = np.sqrt(np.log1p(vol**2 / (1.0 + mean) ** 2))
    gross = (1.0 + mean) * np.exp(log_sd * correlated - log_sd**2 / 2.0)
    real = gross / (1.0 + inflation)
    return Scenarios(gross=np.ascontiguousarray(real, dtype=FLOAT))


def scenarios_for(params: Params, assumptions: Assumptions) -> Scenarios:
    return generate_scenarios(params.n_sims, params.horizon_years, params.inflation, params.seed, assumptions)


def _initial_wealth(household: Household) -> float:
    return float(household.assets.total)


def _portfolio_gross(weights: NDArray[np.float64], gross: NDArray[np.float64], out: NDArray[np.float64]) -> None:
    """out[c, p] = Σ_k weights[c, k] · gross[k, p], elementwise (see the BLAS note above)."""
    tmp = np.empty_like(out)
    np.multiply(weights[:, 0:1], gross[0][None, :], out=out)
    for k in range(1, weights.shape[1]):
        np.multiply(weights[:, k : k + 1], gross[k][None, :], out=tmp)
        np.add(out, tmp, out=out)


@dataclass
class _BlockResult:
    terminal: NDArray[np.float64]  # (C, N) wealth at the end of the horizon
    shortfall: NDArray[np.float64]  # (C, N) total unmet spending
    max_drawdown: NDArray[np.float64]  # (C, N) 0..1
    wealth_by_year: list[NDArray[np.float64]]  # year-start wealth, only when recording
    short_by_year: list[NDArray[np.bool_]]  # "had a shortfall by the end of year t", only when recording


def _run_block(
    household: Household,
    params: Params,
    flows: CashFlows,
    scenarios: Scenarios,
    weights: NDArray[np.float64],
    *,
    record: bool = False,
) -> _BlockResult:
    """Simulate a block of candidates over every path and year.

    With `record`, also keep each year's wealth and depletion flags (for the charts); only used
    for a single candidate since it holds horizon × C × N values.
    """
    n_candidates = weights.shape[0]
    n_sims = scenarios.gross.shape[2]
    shape = (n_candidates, n_sims)
    wealth = np.full(shape, _initial_wealth(household), dtype=FLOAT)
    shortfall = np.zeros(shape, dtype=FLOAT)
    # Drawdown as the ratio of the return index to its running peak: ratio' = min(ratio · g, 1)
    # needs no index or peak array, and the maximum drawdown is 1 - the smallest ratio seen.
    ratio = np.ones(shape, dtype=FLOAT)
    lowest_ratio = np.ones(shape, dtype=FLOAT)
    growth = np.empty(shape, dtype=FLOAT)
    tmp = np.empty(shape, dtype=FLOAT)
    holdings = None if params.rebalance else (weights.T[:, :, None] * wealth[None, :, :]).astype(FLOAT)
    payout: NDArray[np.float64] | None = None
    result = _BlockResult(wealth, shortfall, lowest_ratio, [], [])
    for year in range(params.horizon_years):
        if record:
            result.wealth_by_year.append(wealth.copy())
        net = FLOAT(flows.net[year])
        if params.payout_rate is not None and year == flows.retirement_year:
            payout = (wealth * FLOAT(params.payout_rate)).astype(FLOAT)
        withdrawal = payout if payout is not None and bool(flows.retired[year]) else None
        if holdings is not None:
            _flows_drifting(holdings, weights, wealth, net, withdrawal, shortfall, tmp)
            np.copyto(tmp, wealth)
            holdings *= scenarios.gross[year][:, None, :]
            holdings.sum(axis=0, out=wealth)
            # An empty portfolio has no drifted weights: its index follows the target allocation,
            # as new money would be invested.
            _portfolio_gross(weights, scenarios.gross[year], growth)
            np.divide(wealth, tmp, out=growth, where=tmp > 0)
        else:
            np.add(wealth, net, out=wealth)
            if withdrawal is not None:
                np.subtract(wealth, withdrawal, out=wealth)
            np.minimum(wealth, 0, out=tmp)
            np.subtract(shortfall, tmp, out=shortfall)
            np.maximum(wealth, 0, out=wealth)
            _portfolio_gross(weights, scenarios.gross[year], growth)
            np.multiply(wealth, growth, out=wealth)
        if record:
            result.short_by_year.append(shortfall > 0)
        np.multiply(ratio, growth, out=ratio)
        np.minimum(ratio, 1, out=ratio)
        np.minimum(lowest_ratio, ratio, out=lowest_ratio)
    if record:
        result.wealth_by_year.append(wealth.copy())
    result.max_drawdown = (1 - lowest_ratio).astype(FLOAT)
    return result


def _flows_drifting(
    holdings: NDArray[np.float64],
    weights: NDArray[np.float64],
    wealth: NDArray[np.float64],
    net: np.float64,
    payout: NDArray[np.float64] | None,
    shortfall: NDArray[np.float64],
    tmp: NDArray[np.float64],
) -> None:
    """Apply a year's cash flow without rebalancing: buy at target weights, sell pro rata."""
    total = wealth
    flow = np.full_like(total, net) if payout is None else (net - payout).astype(FLOAT)
    after = total + flow
    np.minimum(after, 0, out=tmp)
    np.subtract(shortfall, tmp, out=shortfall)
    np.maximum(after, 0, out=after)
    # Scale every class by after/total when money leaves; add new money at the target weights.
    scale = np.where(flow < 0, after / np.where(total > 0, total, 1), 1).astype(FLOAT)
    inflow = np.maximum(flow, 0)
    holdings *= scale[None, :, :]
    holdings += weights.T[:, :, None] * inflow[None, :, :]
    holdings.sum(axis=0, out=wealth)


def simulate_candidates(
    household: Household, params: Params, assumptions: Assumptions, weights: NDArray[np.floating]
) -> CandidateMetrics:
    """Evaluate every row of `weights` (C × classes) on the common scenarios of `params.seed`."""
    weights32 = np.ascontiguousarray(weights, dtype=FLOAT)
    if weights32.ndim != 2 or weights32.shape[1] != assumptions.n_classes:
        raise ValueError(f"weights must have shape (n, {assumptions.n_classes}), got {weights32.shape}")
    flows = build_cash_flows(household, params)
    scenarios = scenarios_for(params, assumptions)
    block = max(1, BLOCK_ELEMENTS // params.n_sims)
    parts = [
        _metrics(
            np.empty((0, params.n_sims), dtype=FLOAT),
            np.empty((0, params.n_sims), dtype=FLOAT),
            np.empty((0, params.n_sims), dtype=FLOAT),
        )
    ]
    for start in range(0, weights32.shape[0], block):
        run = _run_block(household, params, flows, scenarios, weights32[start : start + block])
        parts.append(_metrics(run.terminal, run.shortfall, run.max_drawdown))
    return CandidateMetrics.concatenate(parts)


def _metrics(
    terminal: NDArray[np.float64], shortfall: NDArray[np.float64], drawdown: NDArray[np.float64]
) -> CandidateMetrics:
    # Reductions along axis 1 of C-contiguous float64 rows: each row is summed on its own, so the
    # result cannot depend on how many rows share the block.
    terminal_q = np.percentile(terminal, TERMINAL_PERCENTILES, axis=1)
    drawdown_q = np.percentile(drawdown, DRAWDOWN_PERCENTILES, axis=1)
    return CandidateMetrics(
        success_count=np.count_nonzero(shortfall == 0, axis=1).astype(np.int64),
        expected_shortfall=shortfall.mean(axis=1),
        terminal_p5=terminal_q[0],
        terminal_median=terminal_q[1],
        terminal_p95=terminal_q[2],
        max_drawdown_median=drawdown_q[0],
        max_drawdown_p95=drawdown_q[1],
    )


def simulate_paths(
    household: Household, params: Params, assumptions: Assumptions, weights: NDArray[np.floating]
) -> PathDetail:
    """Year-by-year percentile bands and per-path drawdowns of one allocation (for the charts)."""
    row = np.ascontiguousarray(np.reshape(weights, (1, -1)), dtype=FLOAT)
    flows = build_cash_flows(household, params)
    scenarios = scenarios_for(params, assumptions)
    run = _run_block(household, params, flows, scenarios, row, record=True)
    path_wealth = np.stack([w[0] for w in run.wealth_by_year])  # (horizon + 1, n_sims)
    depleted = np.stack([flag[0] for flag in run.short_by_year])  # (horizon, n_sims)
    return PathDetail(
        ages=household.current_age + np.arange(params.horizon_years + 1, dtype=np.int64),
        wealth_bands=np.percentile(path_wealth, BAND_PERCENTILES, axis=1),
        depleted_share=depleted.mean(axis=1),
        max_drawdowns=run.max_drawdown[0],
        terminal_wealth=run.terminal[0],
    )
