"""Spec 003's regimes, de-risk state machine, trading states and reduction plan (pure, with a set clock)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.risk.derisk import (
    DeriskConfig,
    DeriskState,
    Line,
    Regime,
    Session,
    TradingState,
    derisk_next,
    gross_after,
    reduction_plan,
    regime,
    trading_state,
)

CONFIG = DeriskConfig()
# 2026-03-02 is a Monday; US/Eastern is UTC-5 then.
SESSION = Session(open_at=datetime(2026, 3, 2, 14, 30, tzinfo=UTC), close_at=datetime(2026, 3, 2, 21, 0, tzinfo=UTC))


def at(hour: int, minute: int, day: int = 2) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=ZoneInfo("America/New_York")).astimezone(UTC)


def test_regimes_across_the_session():
    assert [
        regime(at(h, m), SESSION, CONFIG) for h, m in [(9, 0), (9, 45), (10, 30), (12, 0), (15, 0), (15, 50), (16, 0)]
    ] == [
        Regime.CLOSED,
        Regime.OPEN,
        Regime.EARLY,
        Regime.MID,
        Regime.LATE,
        Regime.CLOSE,
        Regime.CLOSED,
    ]


def test_derisk_moves_soft_then_hard_by_the_eastern_clock():
    states = []
    previous, day = DeriskState.NORMAL, None
    for hour, minute in [(16, 14), (16, 15), (16, 27), (16, 28), (23, 59)]:
        step = derisk_next(previous=previous, previous_day=day, now=at(hour, minute), config=CONFIG)
        previous, day = step.state, step.day
        states.append(step.state)
    assert states == [
        DeriskState.NORMAL,
        DeriskState.SOFT_DERISK,
        DeriskState.SOFT_DERISK,
        DeriskState.HARD_DERISK,
        DeriskState.HARD_DERISK,
    ]
    assert (
        derisk_next(previous=previous, previous_day=day, now=at(9, 0, day=3), config=CONFIG).state == DeriskState.NORMAL
    )


def test_derisk_never_goes_back_within_a_day():
    step = derisk_next(previous=DeriskState.HARD_DERISK, previous_day=date(2026, 3, 2), now=at(16, 20), config=CONFIG)
    assert step.state == DeriskState.HARD_DERISK


def test_config_refuses_hard_before_soft():
    with pytest.raises(ValueError, match="hard_at"):
        DeriskConfig(soft_at=time(16, 30), hard_at=time(16, 0))


def test_trading_state_most_restrictive_wins():
    assert trading_state(halted=False, reducing=False) == TradingState.ACTIVE
    assert trading_state(halted=False, reducing=True) == TradingState.REDUCING
    assert trading_state(halted=True, reducing=True) == TradingState.HALTED
    assert trading_state(halted=False, reducing=False, manual=TradingState.HALTED) == TradingState.HALTED


def test_reduction_plan_reaches_the_target():
    lines = [Line("AAPL", "a", Decimal(800), Decimal(100)), Line("TSLA", "t", Decimal(-400), Decimal(100))]
    plan = reduction_plan(lines, equity=Decimal(100000), target_pct=Decimal(100))  # gross 120 %
    assert [(r.symbol, r.side, r.quantity) for r in plan] == [
        ("AAPL", "SELL", Decimal(134)),
        ("TSLA", "BUY", Decimal(67)),
    ]
    assert gross_after(lines, plan) <= Decimal(100000)


@given(
    st.lists(st.tuples(st.integers(-5000, 5000), st.integers(1, 500), st.sampled_from([1, 10, 100])), max_size=8),
    st.integers(1000, 1_000_000),
    st.integers(10, 130),
)
def test_reduction_plan_never_overshoots_flat_and_meets_target(rows, equity, target):
    lines = [
        Line(f"S{i}", f"i{i}", Decimal(q), Decimal(p), lot_size=Decimal(lot)) for i, (q, p, lot) in enumerate(rows)
    ]
    plan = reduction_plan(lines, equity=Decimal(equity), target_pct=Decimal(target))
    by_id = {line.instrument_id: line for line in lines}
    for reduction in plan:
        line = by_id[reduction.instrument_id]
        assert 0 < reduction.quantity <= abs(line.quantity)
        assert reduction.side == ("SELL" if line.quantity > 0 else "BUY")
    assert gross_after(lines, plan) <= max(Decimal(equity) * target / 100, Decimal(0)) or all(
        r.quantity == abs(by_id[r.instrument_id].quantity) for r in plan
    )
