"""The on-close cutoff rule and the calendar facts it reads (pure, with a set clock)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from apps.compliance import calendars
from apps.compliance.rules import Candidate, Rule, RuleKind, Snapshot, evaluate

NEW_YORK = ZoneInfo("America/New_York")


def et(day: int, hour: int, minute: int, month: int = 11, year: int = 2025) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NEW_YORK).astimezone(UTC)


def candidate(order_type: str, **extra) -> Candidate:
    return Candidate("acc", "ins", "AAPL", "BUY", order_type, extra.pop("limit_price", Decimal(100)), **extra)


def check(now: datetime, order: Candidate, name: str = "on_close_cutoff", rules: tuple[Rule, ...] = ()):
    snapshot = Snapshot(now=now, calendar=calendars.facts("XNYS", now), rules=rules)
    return [c for c in evaluate(snapshot, order) if c.gate == name]


def test_moc_and_loc_are_refused_after_the_nyse_cutoff_of_15_50():
    (before,) = check(et(24, 15, 49), candidate("MOC"))
    (after,) = check(et(24, 15, 50), candidate("LOC"))
    assert before.passed
    assert not after.passed
    assert after.detail == (
        "LOC orders are refused after the XNYS on-close cutoff 15:50 America/New_York (close 16:00)"
    )
    assert after.inputs["cutoff"] == "2025-11-24T20:50:00+00:00"


def test_the_cutoff_follows_an_early_close():
    # The day after Thanksgiving 2025 closes at 13:00: the cutoff is 12:50.
    assert check(et(28, 12, 49), candidate("MOC"))[0].passed
    (late,) = check(et(28, 12, 55), candidate("MOC"))
    assert not late.passed and "12:50" in late.detail


def test_other_order_types_have_no_cutoff_check():
    assert check(et(24, 15, 55), candidate("LMT")) == []


def test_a_closed_market_is_held_or_refused_by_the_tenant_rule():
    night = et(24, 22, 0)
    (held,) = check(night, candidate("LMT"), "trading_hours")
    assert held.passed and "held for the next session (2025-11-25T14:30:00+00:00)" in held.detail
    refuse = (Rule("r1", 3, RuleKind.TRADING_HOURS, {"closed_market": "REFUSE"}),)
    (refused,) = check(night, candidate("LMT"), "trading_hours", refuse)
    assert not refused.passed and refused.rule_id == "r1" and refused.rule_version == 3
    (outside,) = check(night, candidate("LMT", outside_rth=True), "trading_hours", refuse)
    assert outside.passed and "routed now (outside_rth)" in outside.detail


def test_previous_close_and_always_open():
    assert calendars.previous_close("XNYS", et(24, 12, 0)) == et(21, 16, 0)
    assert calendars.previous_close("XNYS", et(24, 16, 1)) == et(24, 16, 0)
    assert calendars.previous_close(calendars.ALWAYS_OPEN, et(24, 16, 1)) is None
    facts = calendars.facts(calendars.ALWAYS_OPEN, et(24, 3, 0))
    assert facts.is_open and facts.on_close_cutoff is None
