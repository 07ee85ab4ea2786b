"""Compliance rules as pure functions of a frozen snapshot and one order (no Django).

Rules: restricted symbols and accounts (lists with reasons and validity windows), trading hours
(from the exchange calendar's facts, computed outside and passed in), tenant-defined restricted
hours, and a wash-trade rule (an order that could cross the tenant's own working order on the
other side of the same instrument). `evaluate` returns every check, each naming its rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from decimal import Decimal
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

CODE = "COMPLIANCE_BLOCKED"
# Orders whose execution price is not bounded: they can cross anything on the other side.
UNBOUNDED = frozenset({"MKT", "STP", "TRAIL", "MOC"})
ON_CLOSE = frozenset({"MOC", "LOC"})


class RuleKind(StrEnum):
    TRADING_HOURS = "TRADING_HOURS"
    RESTRICTED_HOURS = "RESTRICTED_HOURS"
    WASH_TRADE = "WASH_TRADE"


class RestrictionKind(StrEnum):
    SYMBOL = "SYMBOL"
    ACCOUNT = "ACCOUNT"


class ClosedMarket(StrEnum):
    HOLD = "HOLD"  # accept, the broker holds it for the next session (as IB does)
    REFUSE = "REFUSE"  # refuse with COMPLIANCE_BLOCKED


class WashScope(StrEnum):
    ACCOUNT = "ACCOUNT"
    TENANT = "TENANT"


@dataclass(frozen=True, slots=True)
class Restriction:
    id: str
    kind: RestrictionKind
    value: str  # an upper-case symbol, or an account id
    reason: str
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    def active(self, now: datetime) -> bool:
        return (self.valid_from is None or self.valid_from <= now) and (
            self.valid_until is None or now < self.valid_until
        )


@dataclass(frozen=True, slots=True)
class Rule:
    """One tenant rule; `params` are already validated by the service (see `parse_params`)."""

    id: str
    version: int
    kind: RuleKind
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class CalendarFacts:
    """Whether the account's market is in its regular session at `now` (from exchange_calendars)."""

    calendar: str  # an exchange_calendars name such as XNYS, or ALWAYS_OPEN
    is_open: bool
    next_open: datetime | None = None
    close_at: datetime | None = None  # while open: this session's close
    on_close_cutoff: datetime | None = None  # while open: MOC / LOC orders are refused from then on
    timezone: str = "UTC"  # the exchange's local time zone (for messages)


@dataclass(frozen=True, slots=True)
class Session:
    """Today's regular session of an exchange (UTC bounds); None bounds: no session today."""

    open_at: datetime | None
    close_at: datetime | None


@dataclass(frozen=True, slots=True)
class WorkingOrder:
    order_id: str
    account_id: str
    instrument_id: str
    side: str
    order_type: str
    limit_price: Decimal | None


@dataclass(frozen=True, slots=True)
class Candidate:
    account_id: str
    instrument_id: str
    symbol: str
    side: str
    order_type: str
    limit_price: Decimal | None
    outside_rth: bool = False
    replaces: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    now: datetime
    calendar: CalendarFacts
    restrictions: tuple[Restriction, ...] = ()
    rules: tuple[Rule, ...] = ()
    working: tuple[WorkingOrder, ...] = ()  # the tenant's working orders in the candidate's instrument


@dataclass(frozen=True, slots=True)
class Check:
    gate: str
    passed: bool
    detail: str
    rule_id: str | None = None
    rule_version: int | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)


def parse_params(kind: RuleKind, params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and normalise a rule's parameters; raise ValueError naming the bad field."""
    if kind == RuleKind.TRADING_HOURS:
        unknown = set(params) - {"closed_market"}
        mode = params.get("closed_market", ClosedMarket.HOLD.value)
        if unknown or mode not in ClosedMarket.__members__:
            raise ValueError(f"closed_market must be one of {', '.join(ClosedMarket)} (and nothing else)")
        return {"closed_market": mode}
    if kind == RuleKind.WASH_TRADE:
        unknown = set(params) - {"scope"}
        scope = params.get("scope", WashScope.ACCOUNT.value)
        if unknown or scope not in WashScope.__members__:
            raise ValueError(f"scope must be one of {', '.join(WashScope)} (and nothing else)")
        return {"scope": scope}
    unknown = set(params) - {"timezone", "start", "end", "weekdays"}
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)}")
    try:
        ZoneInfo(str(params.get("timezone", "America/New_York")))
        start, end = time.fromisoformat(str(params["start"])), time.fromisoformat(str(params["end"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError("start and end (HH:MM) and a valid IANA timezone are required") from exc
    weekdays = list(params.get("weekdays", [0, 1, 2, 3, 4]))
    if start == end or any(not isinstance(day, int) or not 0 <= day <= 6 for day in weekdays):
        raise ValueError("start must differ from end; weekdays are 0 (Monday) to 6")
    return {
        "timezone": str(params.get("timezone", "America/New_York")),
        "start": start.strftime("%H:%M"),
        "end": end.strftime("%H:%M"),
        "weekdays": sorted(set(weekdays)),
    }


def _restricted(snapshot: Snapshot, order: Candidate) -> list[Check]:
    checks = []
    for kind, value in ((RestrictionKind.SYMBOL, order.symbol.upper()), (RestrictionKind.ACCOUNT, order.account_id)):
        hits = [r for r in snapshot.restrictions if r.kind == kind and r.value == value and r.active(snapshot.now)]
        gate = f"restricted_{kind.value.lower()}"
        if hits:
            hit = hits[0]
            checks.append(
                Check(gate, False, f"{kind.value.title()} {value} is restricted: {hit.reason}", rule_id=hit.id)
            )
        else:
            checks.append(Check(gate, True, f"{kind.value.title()} {value} is not restricted"))
    return checks


def _in_window(now: datetime, params: Mapping[str, Any]) -> bool:
    local = now.astimezone(ZoneInfo(params["timezone"]))
    start, end, clock = time.fromisoformat(params["start"]), time.fromisoformat(params["end"]), local.time()
    if local.weekday() not in params["weekdays"]:
        return False
    return start <= clock < end if start < end else clock >= start or clock < end  # a window past midnight


def _hours(snapshot: Snapshot, order: Candidate, rules: Sequence[Rule]) -> list[Check]:
    calendar = snapshot.calendar
    checks = []
    facts = {"calendar": calendar.calendar, "is_open": calendar.is_open}
    mode_rule = next((rule for rule in rules if rule.kind == RuleKind.TRADING_HOURS), None)
    mode = ClosedMarket(mode_rule.params["closed_market"]) if mode_rule else ClosedMarket.HOLD
    rule_ref: dict[str, Any] = {"rule_id": mode_rule.id, "rule_version": mode_rule.version} if mode_rule else {}
    if calendar.is_open:
        checks.append(
            Check("trading_hours", True, f"{calendar.calendar} is in its regular session", inputs=facts, **rule_ref)
        )
    elif mode == ClosedMarket.REFUSE and not order.outside_rth:
        checks.append(
            Check(
                "trading_hours",
                False,
                f"{calendar.calendar} is closed and this tenant refuses orders for a closed market",
                inputs=facts,
                **rule_ref,
            )
        )
    else:
        nxt = calendar.next_open.isoformat() if calendar.next_open else None
        held = "routed now (outside_rth)" if order.outside_rth else f"held for the next session ({nxt})"
        checks.append(
            Check(
                "trading_hours",
                True,
                f"{calendar.calendar} is closed: {held}",
                inputs={**facts, "next_open": nxt},
                **rule_ref,
            )
        )
    for rule in rules:
        if rule.kind != RuleKind.RESTRICTED_HOURS:
            continue
        inside = _in_window(snapshot.now, rule.params)
        window = f"{rule.params['start']}–{rule.params['end']} {rule.params['timezone']}"
        detail = f"restricted hours {window}: {'inside, refused' if inside else 'outside'}"
        checks.append(Check("restricted_hours", not inside, detail, rule.id, rule.version))
    return checks


def _on_close(snapshot: Snapshot, order: Candidate) -> list[Check]:
    """MOC / LOC orders are refused between the exchange's on-close cutoff and the close."""
    if order.order_type not in ON_CLOSE:
        return []
    calendar = snapshot.calendar
    cutoff, close_at = calendar.on_close_cutoff, calendar.close_at
    inputs = {
        "calendar": calendar.calendar,
        "cutoff": cutoff.isoformat() if cutoff else None,
        "close": close_at.isoformat() if close_at else None,
    }
    if cutoff is not None and close_at is not None and cutoff <= snapshot.now < close_at:
        zone = ZoneInfo(calendar.timezone)
        detail = (
            f"{order.order_type} orders are refused after the {calendar.calendar} on-close cutoff "
            f"{cutoff.astimezone(zone):%H:%M} {calendar.timezone} (close {close_at.astimezone(zone):%H:%M})"
        )
        return [Check("on_close_cutoff", False, detail, inputs=inputs)]
    return [Check("on_close_cutoff", True, f"before the {calendar.calendar} on-close cutoff", inputs=inputs)]


def crosses(order: Candidate, other: WorkingOrder) -> bool:
    """Whether `order` could trade against `other` (opposite sides, overlapping prices)."""
    if order.side == other.side or order.instrument_id != other.instrument_id:
        return False
    mine = None if order.order_type in UNBOUNDED else order.limit_price
    theirs = None if other.order_type in UNBOUNDED else other.limit_price
    if mine is None or theirs is None:
        return True
    buy, sell = (mine, theirs) if order.side == "BUY" else (theirs, mine)
    return buy >= sell


def _wash(snapshot: Snapshot, order: Candidate, rules: Sequence[Rule]) -> list[Check]:
    rule = next((rule for rule in rules if rule.kind == RuleKind.WASH_TRADE), None)
    if rule is None:
        return [Check("wash_trade", True, "no wash-trade rule configured")]
    across = rule.params["scope"] == WashScope.TENANT
    candidates = [
        other
        for other in snapshot.working
        if other.order_id != order.replaces and (across or other.account_id == order.account_id)
    ]
    hits = [other for other in candidates if crosses(order, other)]
    where = "the tenant's accounts" if across else "this account"
    if not hits:
        return [Check("wash_trade", True, f"crosses no working order of {where}", rule.id, rule.version)]
    first = hits[0]
    detail = (
        f"could cross working {first.side} order {first.order_id} "
        f"({first.order_type} {first.limit_price if first.limit_price is not None else ''}) on {where}"
    ).replace(" )", ")")
    inputs = {"crossing_orders": [hit.order_id for hit in hits]}
    return [Check("wash_trade", False, detail, rule.id, rule.version, inputs)]


def evaluate(snapshot: Snapshot, order: Candidate) -> list[Check]:
    """Every compliance check of `order`, in a fixed order."""
    return [
        *_restricted(snapshot, order),
        *_hours(snapshot, order, snapshot.rules),
        *_on_close(snapshot, order),
        *_wash(snapshot, order, snapshot.rules),
    ]
