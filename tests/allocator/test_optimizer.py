"""The grid, the recommendation, the efficient set, and parallel runs equal to serial ones."""

from __future__ import annotations

import dataclasses
from math import comb

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.allocator.assumptions import Assumptions
from apps.allocator.household import Params, parse_request
from apps.allocator.optimizer import (
    Canceled,
    OptimizationResult,
    candidate_counts,
    candidate_grid,
    efficient_set,
    evaluate_chunk,
    optimize,
    recommend,
)
from apps.allocator.simulation import CandidateMetrics
from tests.allocator.conftest import example_body


def test_four_classes_at_five_percent_give_1771_candidates() -> None:
    grid = candidate_grid(4, 0.05)

    assert grid.shape == (1771, 4)
    assert len({tuple(row) for row in grid.tolist()}) == 1771


@settings(max_examples=40, deadline=None)
@given(n_classes=st.integers(1, 5), steps=st.integers(1, 20))
def test_weights_always_sum_to_one(n_classes: int, steps: int) -> None:
    counts = candidate_counts(n_classes, steps)
    grid = candidate_grid(n_classes, 1 / steps)

    assert counts.shape == (comb(steps + n_classes - 1, n_classes - 1), n_classes)
    assert np.all(counts.sum(axis=1) == steps)
    assert np.all(counts >= 0)
    assert np.allclose(grid.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all((grid >= 0) & (grid <= 1))


def metrics(success: list[int], shortfall: list[float], p5: list[float], median: list[float]) -> CandidateMetrics:
    zeros = np.zeros(len(success))
    return CandidateMetrics(
        success_count=np.array(success, dtype=np.int64),
        expected_shortfall=np.array(shortfall),
        terminal_p5=np.array(p5),
        terminal_median=np.array(median),
        terminal_p95=zeros,
        max_drawdown_median=zeros,
        max_drawdown_p95=zeros,
    )


def test_recommendation_breaks_ties_by_shortfall_then_median_then_index() -> None:
    assert recommend(metrics([90, 95, 95], [5.0, 3.0, 2.0], [0, 0, 0], [9, 0, 0])) == 2
    assert recommend(metrics([95, 95, 95], [2.0, 2.0, 2.0], [0, 0, 0], [1.0, 3.0, 2.0])) == 1
    assert recommend(metrics([95, 95, 95], [2.0, 2.0, 2.0], [0, 0, 0], [3.0, 3.0, 3.0])) == 0


def test_efficient_set_keeps_only_undominated_candidates() -> None:
    # (success, shortfall, median): 0=(90,0,500) 1=(95,0,400) 2=(95,0,300) 3=(80,0,450) 4=(70,0,600)
    # 5=(90,0,500) ties 0 and loses on index; 6=(95,1,450) is less safe than 1 (more shortfall)
    # but has the higher median, so it stays.
    m = metrics([90, 95, 95, 80, 70, 90, 95], [0] * 6 + [1], [0] * 7, [500, 400, 300, 450, 600, 500, 450])

    assert efficient_set(m).tolist() == [4, 0, 6, 1]
    assert recommend(m) == 1


@pytest.fixture(scope="module")
def small_request() -> tuple[object, Params]:
    body = example_body()
    body["params"].update(n_sims=400, n_jobs=1, grid_step=0.1, horizon_years=30, seed=11)
    request = parse_request(body)
    return request.household, request.params


def run(small_request: tuple[object, Params], assumptions: Assumptions, **kwargs: object) -> OptimizationResult:
    household, params = small_request
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in {f.name for f in dataclasses.fields(Params)}}
    return optimize(household, dataclasses.replace(params, **overrides), assumptions, chunk_candidates=32, **kwargs)  # type: ignore[arg-type]


def assert_identical(left: OptimizationResult, right: OptimizationResult) -> None:
    assert np.array_equal(left.weights, right.weights)
    for field in dataclasses.fields(CandidateMetrics):
        assert np.array_equal(getattr(left.metrics, field.name), getattr(right.metrics, field.name)), field.name
    assert left.recommended == right.recommended
    assert np.array_equal(left.efficient, right.efficient)
    assert np.array_equal(left.detail.wealth_bands, right.detail.wealth_bands)
    assert left.summary() == right.summary()


def test_two_processes_give_exactly_the_single_process_result(
    small_request: tuple[object, Params], default_assumptions: Assumptions
) -> None:
    single = run(small_request, default_assumptions, n_jobs=1)
    processes = run(small_request, default_assumptions, n_jobs=2)
    threads = run(small_request, default_assumptions, n_jobs=2, executor="thread")

    assert single.weights.shape == (286, 4)
    assert_identical(single, processes)
    assert_identical(single, threads)


def test_same_seed_gives_the_same_result(
    small_request: tuple[object, Params], default_assumptions: Assumptions
) -> None:
    assert_identical(run(small_request, default_assumptions), run(small_request, default_assumptions))


def test_chunks_evaluated_separately_match_the_whole(
    small_request: tuple[object, Params], default_assumptions: Assumptions
) -> None:
    household, params = small_request
    whole = run(small_request, default_assumptions)
    grid = candidate_grid(4, params.grid_step)

    # A caller fanning out (e.g. Celery subtasks) may cut the grid anywhere.
    parts = [
        evaluate_chunk(household, params, default_assumptions, grid[a:b]) for a, b in ((0, 7), (7, 200), (200, 286))
    ]
    joined = CandidateMetrics.concatenate(parts)

    for field in dataclasses.fields(CandidateMetrics):
        assert np.array_equal(getattr(joined, field.name), getattr(whole.metrics, field.name)), field.name


def test_recommendation_is_the_safest_and_on_the_efficient_set(
    small_request: tuple[object, Params], default_assumptions: Assumptions
) -> None:
    result = run(small_request, default_assumptions)
    success = result.metrics.success_count

    assert success[result.recommended] == success.max()
    assert result.recommended in result.efficient.tolist()
    assert result.efficient[-1] == result.recommended
    frontier_success = success[result.efficient]
    frontier_median = result.metrics.terminal_median[result.efficient]
    assert np.all(np.diff(frontier_success) >= 0)
    assert np.all(np.diff(frontier_median) < 0)
    summary = result.summary()
    assert summary["n_candidates"] == 286
    assert summary["recommended"]["success_probability"] == success[result.recommended] / 400
    assert sum(summary["recommended"]["weights"].values()) == pytest.approx(1.0)


def test_progress_rises_to_100_through_named_stages(
    small_request: tuple[object, Params], default_assumptions: Assumptions
) -> None:
    seen: list[tuple[float, str]] = []

    run(small_request, default_assumptions, n_jobs=2, on_progress=lambda percent, stage: seen.append((percent, stage)))

    percents = [p for p, _ in seen]
    assert percents == sorted(percents)
    assert seen[0] == (0.0, "scenarios")
    assert seen[-1] == (100.0, "done")
    assert list(dict.fromkeys(stage for _, stage in seen)) == [
        "scenarios",
        "simulating",
        "selecting",
        "detail",
        "done",
    ]
    assert len([s for _, s in seen if s == "simulating"]) == 10  # 286 candidates in chunks of 32, plus the start


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_cancel_stops_the_run(
    small_request: tuple[object, Params], default_assumptions: Assumptions, n_jobs: int
) -> None:
    calls: list[float] = []

    def should_cancel() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Canceled, match="canceled during simulating"):
        run(small_request, default_assumptions, n_jobs=n_jobs, should_cancel=should_cancel, executor="thread")
    assert len(calls) == 4
