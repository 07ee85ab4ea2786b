"""The optimiser: evaluate every allocation on the simplex grid and pick one.

The grid holds every allocation whose weights are multiples of ``grid_step`` and sum to one
(4 classes at 0.05: C(23, 3) = 1,771 candidates). Candidates are evaluated in fixed chunks of
`CHUNK_CANDIDATES` by `evaluate_chunk`, a pure function of its arguments: each process (or a
Celery subtask, if the caller fans out that way) regenerates the common scenarios from the seed,
so the chunks can run anywhere and in any order and the assembled result is bit-identical to a
single-process run.

The recommendation is the candidate with the highest probability of success; ties go to the
lower expected shortfall, then the higher median terminal wealth, then the lower grid index, so
the choice is always deterministic. "Safety" below means that order: success probability first,
expected shortfall second. The efficient set beside the recommendation is every candidate that
no other beats on both safety and median terminal wealth: what a client gives up in safety for
upside, and the reverse. The recommendation is its safest end by construction.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from apps.allocator.assumptions import Assumptions
from apps.allocator.household import Household, Params
from apps.allocator.simulation import CandidateMetrics, PathDetail, scenarios_for, simulate_candidates, simulate_paths

# Small enough for a progress tick every few percent, large enough that per-task overhead
# (pickling, scheduling) stays negligible beside ~0.1 s of work per chunk at 10,000 paths.
CHUNK_CANDIDATES = 64

ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], bool]


class Canceled(Exception):
    """`should_cancel()` returned True; the run stopped and produced no result."""


@dataclass(frozen=True)
class OptimizationResult:
    """Everything the job stores and the report draws; arrays are indexed by grid position."""

    asset_classes: tuple[str, ...]
    labels: tuple[str, ...]
    weights: NDArray[np.float64]  # (n_candidates, n_classes)
    metrics: CandidateMetrics
    params: Params
    recommended: int
    efficient: NDArray[np.int64]  # grid indices, by increasing success probability
    detail: PathDetail  # the recommended allocation year by year

    @property
    def n_sims(self) -> int:
        return self.params.n_sims

    @property
    def success_probability(self) -> NDArray[np.float64]:
        return self.metrics.success_count / self.n_sims

    def candidate(self, index: int) -> dict[str, Any]:
        """One candidate's weights and metrics, JSON-ready (money as decimal strings)."""
        m = self.metrics
        return {
            "weights": {
                name: round(float(w), 6) for name, w in zip(self.asset_classes, self.weights[index], strict=True)
            },
            "success_probability": round(float(self.success_probability[index]), 6),
            "expected_shortfall": _money(m.expected_shortfall[index]),
            "terminal_wealth_p5": _money(m.terminal_p5[index]),
            "terminal_wealth_median": _money(m.terminal_median[index]),
            "terminal_wealth_p95": _money(m.terminal_p95[index]),
            "max_drawdown_median": round(float(m.max_drawdown_median[index]), 6),
            "max_drawdown_p95": round(float(m.max_drawdown_p95[index]), 6),
        }

    def summary(self) -> dict[str, Any]:
        """The job's result summary: the recommendation and the efficient set."""
        return {
            "n_candidates": int(self.weights.shape[0]),
            "n_sims": self.n_sims,
            "recommended": self.candidate(self.recommended),
            "efficient_set": [self.candidate(int(i)) for i in self.efficient],
        }


def _money(value: np.floating | float) -> str:
    # Money leaves as a decimal string, as everywhere in the API.
    return f"{float(value):.2f}"


def candidate_counts(n_classes: int, steps: int) -> NDArray[np.int64]:
    """Every way to split `steps` grid units over `n_classes`, in lexicographic order."""
    # Stars and bars: choose the n_classes - 1 bar positions among steps + n_classes - 1 slots.
    rows = []
    for bars in combinations(range(steps + n_classes - 1), n_classes - 1):
        edges = (-1, *bars, steps + n_classes - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(n_classes)])
    return np.array(rows, dtype=np.int64).reshape(-1, n_classes)


def candidate_grid(n_classes: int, grid_step: float) -> NDArray[np.float64]:
    """The simplex grid as weights (rows sum to one up to float rounding of count / steps)."""
    steps = round(1 / grid_step)
    return candidate_counts(n_classes, steps) / steps


def evaluate_chunk(
    household: Household, params: Params, assumptions: Assumptions, candidates: NDArray[np.floating]
) -> CandidateMetrics:
    """Evaluate a slice of the grid; pure, so it can run in any process or Celery subtask."""
    return simulate_candidates(household, params, assumptions, candidates)


def _safest_first(metrics: CandidateMetrics) -> NDArray[np.intp]:
    """Grid indices by safety (success, then shortfall), then median wealth, then grid order."""
    index = np.arange(metrics.success_count.shape[0])
    # lexsort sorts by the last key first.
    return np.lexsort((index, -metrics.terminal_median, metrics.expected_shortfall, -metrics.success_count))


def recommend(metrics: CandidateMetrics) -> int:
    """The grid index of the recommendation (see the module docstring for the tie-breaks)."""
    return int(_safest_first(metrics)[0])


def efficient_set(metrics: CandidateMetrics) -> NDArray[np.int64]:
    """Candidates not dominated on (safety ↑, median terminal wealth ↑), by increasing safety."""
    median = metrics.terminal_median
    # Safest first: a candidate is kept when its median beats every candidate at least as safe.
    kept: list[int] = []
    best_median = -np.inf
    for i in _safest_first(metrics):
        if median[i] > best_median:
            kept.append(int(i))
            best_median = float(median[i])
    return np.array(kept[::-1], dtype=np.int64)


def _chunks(n_candidates: int, size: int) -> Iterator[slice]:
    for start in range(0, n_candidates, size):
        yield slice(start, min(start + size, n_candidates))


def _pool(kind: Literal["process", "thread"], workers: int) -> Executor:
    if kind == "thread":
        # numpy releases the GIL inside its loops, so threads scale too and, unlike processes,
        # work inside daemonic workers (Celery's prefork children may not fork).
        return ThreadPoolExecutor(max_workers=workers)
    # forkserver: forking a process that runs threads (Celery, database pools) can deadlock.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))


def optimize(
    household: Household,
    params: Params,
    assumptions: Assumptions,
    *,
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    executor: Literal["process", "thread"] = "process",
    chunk_candidates: int = CHUNK_CANDIDATES,
) -> OptimizationResult:
    """Evaluate the whole grid (over `params.n_jobs` workers) and return the recommendation.

    `on_progress(percent, stage)` is called as chunks finish (stages ``scenarios``,
    ``simulating``, ``selecting``, ``detail``, ``done``); `should_cancel()` is polled between
    chunks and `Canceled` is raised when it returns True.
    """

    def progress(percent: float, stage: str) -> None:
        # Once everything is computed there is nothing left to save by stopping.
        if stage != "done" and should_cancel is not None and should_cancel():
            raise Canceled(f"canceled during {stage}")
        if on_progress is not None:
            on_progress(round(percent, 1), stage)

    progress(0.0, "scenarios")
    grid = candidate_grid(assumptions.n_classes, params.grid_step)
    slices = list(_chunks(grid.shape[0], chunk_candidates))
    parts: list[CandidateMetrics | None] = [None] * len(slices)
    workers = min(params.n_jobs, len(slices), os.cpu_count() or 1)

    # Simulating is ~95% of the work; the other stages share the rest of the bar.
    def tick(done: int) -> None:
        progress(2.0 + 88.0 * done / len(slices), "simulating")

    if workers <= 1:
        scenarios_for(params, assumptions)  # draw once up front so the first tick is honest
        for number, part in enumerate(slices):
            tick(number)
            parts[number] = evaluate_chunk(household, params, assumptions, grid[part])
        tick(len(slices))
    else:
        pool = _pool(executor, workers)
        try:
            futures: dict[Future[CandidateMetrics], int] = {
                pool.submit(evaluate_chunk, household, params, assumptions, grid[part]): number
                for number, part in enumerate(slices)
            }
            tick(0)
            for done, future in enumerate(as_completed(futures), start=1):
                parts[futures[future]] = future.result()
                tick(done)
        finally:
            # On cancellation or error: drop the chunks not started, do not wait for them.
            pool.shutdown(wait=True, cancel_futures=True)
    metrics = CandidateMetrics.concatenate([part for part in parts if part is not None])

    progress(92.0, "selecting")
    best = recommend(metrics)
    frontier = efficient_set(metrics)
    progress(95.0, "detail")
    detail = simulate_paths(household, params, assumptions, grid[best])
    progress(100.0, "done")
    return OptimizationResult(
        asset_classes=assumptions.names,
        labels=assumptions.labels,
        weights=grid,
        metrics=metrics,
        params=params,
        recommended=best,
        efficient=frontier,
        detail=detail,
    )
