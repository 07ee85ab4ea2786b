"""Spec 003's session regimes, the de-risk state machine and the trading states. Pure (no Django).

Session regimes split the exchange's regular session by the time since the open and the time to
the close: OPEN, EARLY, MID, LATE, CLOSE (and CLOSED outside it). The de-risk state machine runs
on the exchange's local clock: NORMAL until `soft_at` (16:15 US/Eastern by default), SOFT_DERISK
until `hard_at` (16:28), HARD_DERISK after it; it only moves forward within a trading day and
starts NORMAL again the next local day. In SOFT_DERISK only exposure-reducing orders pass; in
HARD_DERISK the playbook also asks for reductions down to `target_gross_pct` of equity.

Trading states (NautilusTrader's): ACTIVE, REDUCING (only orders that reduce a position), HALTED
(nothing but cancels). The most restrictive cause wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_CEILING, Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from apps.compliance.rules import Session


class DeriskState(StrEnum):
    NORMAL = "NORMAL"
    SOFT_DERISK = "SOFT_DERISK"
    HARD_DERISK = "HARD_DERISK"


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


class Regime(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    EARLY = "EARLY"
    MID = "MID"
    LATE = "LATE"
    CLOSE = "CLOSE"


ORDER = {DeriskState.NORMAL: 0, DeriskState.SOFT_DERISK: 1, DeriskState.HARD_DERISK: 2}
SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


@dataclass(frozen=True, slots=True)
class DeriskConfig:
    """The playbook's times and thresholds (config/risk_rules.yaml, per-tenant overrides)."""

    timezone: str = "America/New_York"
    soft_at: time = time(16, 15)
    hard_at: time = time(16, 28)
    target_gross_pct: Decimal = Decimal(100)
    hard_cap_pct: Decimal = Decimal(130)
    open_minutes: int = 30  # OPEN: the first minutes of the session
    early_until_minutes: int = 120  # EARLY: until this long after the open
    late_minutes: int = 90  # LATE: from this long before the close
    close_minutes: int = 15  # CLOSE: the last minutes
    regime_caps: dict[str, Decimal] = field(default_factory=dict)  # optional gross cap (%) per regime

    def __post_init__(self) -> None:
        if self.hard_at < self.soft_at:
            raise ValueError("hard_at must not be before soft_at")
        if self.target_gross_pct <= 0 or self.hard_cap_pct < self.target_gross_pct:
            raise ValueError("need 0 < target_gross_pct <= hard_cap_pct")


__all__ = ["DeriskConfig", "DeriskState", "Regime", "Session", "TradingState"]


def regime(now: datetime, session: Session, config: DeriskConfig) -> Regime:
    """The regime of `now` within the session."""
    if session.open_at is None or session.close_at is None or not session.open_at <= now < session.close_at:
        return Regime.CLOSED
    since_open, to_close = now - session.open_at, session.close_at - now
    if to_close <= timedelta(minutes=config.close_minutes):
        return Regime.CLOSE
    if to_close <= timedelta(minutes=config.late_minutes):
        return Regime.LATE
    if since_open < timedelta(minutes=config.open_minutes):
        return Regime.OPEN
    if since_open < timedelta(minutes=config.early_until_minutes):
        return Regime.EARLY
    return Regime.MID


@dataclass(frozen=True, slots=True)
class DeriskStep:
    state: DeriskState
    day: date  # the exchange-local day the state belongs to
    reason: str


def derisk_next(*, previous: DeriskState, previous_day: date | None, now: datetime, config: DeriskConfig) -> DeriskStep:
    """The de-risk state at `now`: by the local clock, never backwards within one local day."""
    local = now.astimezone(ZoneInfo(config.timezone))
    today, clock = local.date(), local.time()
    if clock >= config.hard_at:
        by_clock, reason = DeriskState.HARD_DERISK, f"after {config.hard_at:%H:%M} {config.timezone}"
    elif clock >= config.soft_at:
        by_clock, reason = DeriskState.SOFT_DERISK, f"after {config.soft_at:%H:%M} {config.timezone}"
    else:
        by_clock, reason = DeriskState.NORMAL, f"before {config.soft_at:%H:%M} {config.timezone}"
    if previous_day == today and ORDER[previous] > ORDER[by_clock]:
        return DeriskStep(previous, today, f"stays {previous.value} until the next local day")
    return DeriskStep(by_clock, today, reason)


def trading_state(*, halted: bool, reducing: bool, manual: TradingState = TradingState.ACTIVE) -> TradingState:
    """The most restrictive of the manual state and the automatic causes."""
    automatic = TradingState.HALTED if halted else TradingState.REDUCING if reducing else TradingState.ACTIVE
    return max(automatic, manual, key=lambda state: SEVERITY[state])


@dataclass(frozen=True, slots=True)
class Line:
    """One position as the reduction planner sees it."""

    symbol: str
    instrument_id: str
    quantity: Decimal
    price: Decimal
    multiplier: Decimal = Decimal(1)
    lot_size: Decimal = Decimal(1)


@dataclass(frozen=True, slots=True)
class Reduction:
    """A reduction intent: trade `quantity` of `symbol` on `side` (towards flat)."""

    symbol: str
    instrument_id: str
    side: str
    quantity: Decimal


def reduction_plan(lines: Sequence[Line], *, equity: Decimal, target_pct: Decimal) -> list[Reduction]:
    """Scale every position down by one factor so that gross exposure ends at or below the target.

    Quantities round up to the lot size (so the target is met) and never past flat.
    """
    gross = sum((abs(line.quantity) * line.price * line.multiplier for line in lines), Decimal(0))
    allowed = equity * target_pct / 100
    if equity <= 0:
        allowed = Decimal(0)
    if gross <= allowed or gross == 0:
        return []
    cut = 1 - allowed / gross  # the share of every position to trade away
    plan = []
    for line in sorted(lines, key=lambda item: item.symbol):
        if line.quantity == 0:
            continue
        lots = (abs(line.quantity) * cut / line.lot_size).to_integral_value(rounding=ROUND_CEILING)
        quantity = min(abs(line.quantity), lots * line.lot_size)
        if quantity > 0:
            side = "SELL" if line.quantity > 0 else "BUY"
            plan.append(Reduction(line.symbol, line.instrument_id, side, quantity))
    return plan


def gross_after(lines: Iterable[Line], plan: Iterable[Reduction]) -> Decimal:
    """Gross notional once every reduction of `plan` is done (for tests and the status page)."""
    traded = {reduction.instrument_id: reduction for reduction in plan}
    total = Decimal(0)
    for line in lines:
        reduction = traded.get(line.instrument_id)
        quantity = abs(line.quantity) - (reduction.quantity if reduction else 0)
        total += quantity * line.price * line.multiplier
    return total
