"""The pure compliance rules: restricted lists, trading and restricted hours, wash trades."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.compliance import calendars
from apps.compliance.rules import (
    CalendarFacts,
    Candidate,
    Restriction,
    RestrictionKind,
    Rule,
    RuleKind,
    Snapshot,
    WorkingOrder,
    crosses,
    evaluate,
    parse_params,
)

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
OPEN = CalendarFacts("XNYS", True)


def order(side: str = "BUY", price: str | None = "100", **kw) -> Candidate:
    base = {
        "account_id": "a1",
        "instrument_id": "i1",
        "symbol": "AAPL",
        "side": side,
        "order_type": "LMT" if price else "MKT",
        "limit_price": Decimal(price) if price else None,
    }
    return Candidate(**{**base, **kw})


def by_gate(checks):
    return {check.gate: check for check in checks}


def test_restricted_symbol_within_its_window_is_blocked():
    entry = Restriction(
        "r1", RestrictionKind.SYMBOL, "AAPL", "earnings blackout", NOW - timedelta(hours=1), NOW + timedelta(hours=1)
    )
    check = by_gate(evaluate(Snapshot(NOW, OPEN, restrictions=(entry,)), order()))["restricted_symbol"]
    assert (check.passed, check.rule_id, check.detail) == (False, "r1", "Symbol AAPL is restricted: earnings blackout")
    expired = Restriction("r1", RestrictionKind.SYMBOL, "AAPL", "old", None, NOW)
    assert by_gate(evaluate(Snapshot(NOW, OPEN, restrictions=(expired,)), order()))["restricted_symbol"].passed


def test_closed_market_holds_by_default_and_refuses_when_configured():
    closed = CalendarFacts("XNYS", False, NOW + timedelta(hours=10))
    assert by_gate(evaluate(Snapshot(NOW, closed), order()))["trading_hours"].passed
    refuse = Rule("h1", 2, RuleKind.TRADING_HOURS, {"closed_market": "REFUSE"})
    check = by_gate(evaluate(Snapshot(NOW, closed, rules=(refuse,)), order()))["trading_hours"]
    assert (check.passed, check.rule_id, check.rule_version) == (False, "h1", 2)
    assert by_gate(evaluate(Snapshot(NOW, closed, rules=(refuse,)), order(outside_rth=True)))["trading_hours"].passed


def test_restricted_hours_window_in_local_time():
    rule = Rule(
        "w1", 1, RuleKind.RESTRICTED_HOURS, parse_params(RuleKind.RESTRICTED_HOURS, {"start": "09:30", "end": "10:30"})
    )
    inside = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # 10:00 New York
    assert not by_gate(evaluate(Snapshot(inside, OPEN, rules=(rule,)), order()))["restricted_hours"].passed
    assert by_gate(evaluate(Snapshot(inside + timedelta(hours=1), OPEN, rules=(rule,)), order()))[
        "restricted_hours"
    ].passed


def test_wash_trade_within_account_and_across_accounts():
    sell_other = WorkingOrder("w1", "a2", "i1", "SELL", "LMT", Decimal("99"))
    account_rule = Rule("x", 1, RuleKind.WASH_TRADE, {"scope": "ACCOUNT"})
    tenant_rule = Rule("x", 2, RuleKind.WASH_TRADE, {"scope": "TENANT"})
    assert by_gate(evaluate(Snapshot(NOW, OPEN, rules=(account_rule,), working=(sell_other,)), order()))[
        "wash_trade"
    ].passed
    check = by_gate(evaluate(Snapshot(NOW, OPEN, rules=(tenant_rule,), working=(sell_other,)), order()))["wash_trade"]
    assert not check.passed and check.inputs == {"crossing_orders": ["w1"]}


def test_crossing_needs_overlapping_prices():
    sell = WorkingOrder("w", "a1", "i1", "SELL", "LMT", Decimal("101"))
    assert not crosses(order(price="100"), sell)
    assert crosses(order(price="101"), sell)
    assert crosses(order(price=None), sell)
    assert not crosses(order(side="SELL", price="90"), sell)


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        (RuleKind.TRADING_HOURS, {"closed_market": "MAYBE"}),
        (RuleKind.WASH_TRADE, {"scope": "x"}),
        (RuleKind.RESTRICTED_HOURS, {"start": "25:00", "end": "10:00"}),
        (RuleKind.RESTRICTED_HOURS, {"start": "10:00"}),
    ],
)
def test_bad_params_are_refused(kind, params):
    with pytest.raises(ValueError):
        parse_params(kind, params)


@given(st.integers(1, 200), st.integers(1, 200), st.sampled_from(["BUY", "SELL"]))
def test_crossing_is_symmetric(mine, theirs, side):
    other_side = "SELL" if side == "BUY" else "BUY"
    a = order(side=side, price=str(mine))
    b = WorkingOrder("w", "a1", "i1", other_side, "LMT", Decimal(theirs))
    mirror_a = order(side=other_side, price=str(theirs))
    mirror_b = WorkingOrder("w", "a1", "i1", side, "LMT", Decimal(mine))
    assert crosses(a, b) == crosses(mirror_a, mirror_b)


def test_exchange_calendar_facts_for_a_holiday_and_a_session():
    christmas = calendars.facts("XNYS", datetime(2025, 12, 25, 15, tzinfo=UTC))
    assert (christmas.is_open, christmas.next_open) == (False, datetime(2025, 12, 26, 14, 30, tzinfo=UTC))
    early_close = calendars.session("XNYS", datetime(2025, 11, 28, 15, tzinfo=UTC))
    assert early_close.close_at == datetime(2025, 11, 28, 18, 0, tzinfo=UTC)
    assert calendars.facts("ALWAYS_OPEN", NOW).is_open
