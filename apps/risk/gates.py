"""The pre-trade gate pipeline: a pure function of a frozen snapshot and one order.

`evaluate` returns EVERY check (a preview shows them all; placing refuses on the first failure
by precedence): the kill switch and trading state, then each limit that applies to the order,
each with the limit's id and version, the inputs it used and the projected values. Nothing here
touches a database or a clock: the snapshot says what time it is.

Scope of a limit: TENANT applies to every account of the tenant, ACCOUNT to one account,
INSTRUMENT to one instrument (by id or symbol) on any account, STRATEGY to the orders of one
strategy. Every limit is evaluated per account (the unit that placing serialises on).

A limit the tenant configured fails closed when an input is missing (no price to value a market
order, no last price for the price band); only the built-in default gross-exposure cap (spec
003's 130 %) lets an unpriced order through, saying so in its detail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, cast

from apps.risk.derisk import DeriskState, TradingState
from apps.risk.exposure import ZERO, Exposure, Holding, pct, worst_position


class LimitKind(StrEnum):
    MAX_ORDER_QTY = "MAX_ORDER_QTY"
    MAX_ORDER_NOTIONAL = "MAX_ORDER_NOTIONAL"
    MAX_POSITION_QTY = "MAX_POSITION_QTY"
    MAX_GROSS_EXPOSURE = "MAX_GROSS_EXPOSURE"  # percent of equity
    MAX_OPEN_ORDERS = "MAX_OPEN_ORDERS"
    ORDER_RATE = "ORDER_RATE"  # orders per period
    DAILY_LOSS = "DAILY_LOSS"  # an amount of the account's currency
    TRAILING_DRAWDOWN = "TRAILING_DRAWDOWN"  # an amount below the peak equity
    CONCENTRATION = "CONCENTRATION"  # one instrument's share of equity, percent
    PRICE_BAND = "PRICE_BAND"  # percent distance of the limit price from the last price


PERIOD_KINDS = frozenset({LimitKind.ORDER_RATE})


class LimitScope(StrEnum):
    TENANT = "TENANT"
    ACCOUNT = "ACCOUNT"
    INSTRUMENT = "INSTRUMENT"
    STRATEGY = "STRATEGY"


class Code(StrEnum):
    """The API error code a failed check turns into."""

    KILL_SWITCH_ACTIVE = "KILL_SWITCH_ACTIVE"
    COMPLIANCE_BLOCKED = "COMPLIANCE_BLOCKED"
    RATE_LIMITED = "RATE_LIMITED"
    RISK_LIMIT_BREACH = "RISK_LIMIT_BREACH"


# Which failure wins when several checks fail: the most severe refusal is the one reported.
PRECEDENCE = (Code.KILL_SWITCH_ACTIVE, Code.COMPLIANCE_BLOCKED, Code.RATE_LIMITED, Code.RISK_LIMIT_BREACH)


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit as the gates see it; an active override has already replaced `value`."""

    id: str
    version: int
    kind: LimitKind
    scope: LimitScope
    value: Decimal
    scope_id: str = ""
    period_seconds: int | None = None
    override_id: str | None = None
    builtin: bool = False


@dataclass(frozen=True, slots=True)
class OpenOrder:
    order_id: str
    instrument_id: str
    side: str
    remaining: Decimal

    def signed(self) -> Decimal:
        return self.remaining if self.side == "BUY" else -self.remaining


@dataclass(frozen=True, slots=True)
class OrderSpec:
    """The order under evaluation; a modification names the order it `replaces` (and its new remaining)."""

    account_id: str
    instrument_id: str
    symbol: str
    side: str
    quantity: Decimal
    order_type: str
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    strategy_id: str | None = None
    multiplier: Decimal = Decimal(1)
    replaces: str | None = None

    def signed(self) -> Decimal:
        return self.quantity if self.side == "BUY" else -self.quantity


@dataclass(frozen=True, slots=True)
class Halt:
    """Why new orders in scope stop: a kill switch or an open breaker (`source` names it)."""

    source: str
    source_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the gates read, frozen at one instant, for one account."""

    now: datetime
    account_id: str
    equity: Decimal
    peak_equity: Decimal
    day_pnl: Decimal
    holdings: Mapping[str, Holding]
    open_orders: tuple[OpenOrder, ...]
    recent_submissions: tuple[datetime, ...]
    limits: tuple[Limit, ...]
    last_prices: Mapping[str, Decimal] = field(default_factory=dict)  # by instrument id, from the feed
    trading_state: TradingState = TradingState.ACTIVE
    derisk_state: DeriskState = DeriskState.NORMAL
    halts: tuple[Halt, ...] = ()
    reducing_reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Check:
    """One gate's verdict, with what it read and what it projected."""

    gate: str
    passed: bool
    detail: str
    code: Code = Code.RISK_LIMIT_BREACH
    limit_id: str | None = None
    limit_version: int | None = None
    value: str | None = None
    limit: str | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)
    projected: Mapping[str, Any] = field(default_factory=dict)
    retry_after: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "passed": self.passed,
            "detail": self.detail,
            "code": None if self.passed else self.code.value,
            "limit_id": self.limit_id,
            "limit_version": self.limit_version,
            "value": self.value,
            "limit": self.limit,
            "inputs": dict(self.inputs),
            "projected": dict(self.projected),
        }


@dataclass(frozen=True, slots=True)
class Evaluation:
    checks: tuple[Check, ...]
    projected: Mapping[str, Any]

    @property
    def accepted(self) -> bool:
        return all(check.passed for check in self.checks)

    def refusal(self) -> Check | None:
        """The failed check that decides the refusal (by PRECEDENCE, then pipeline order)."""
        failed = [check for check in self.checks if not check.passed]
        for code in PRECEDENCE:
            for check in failed:
                if check.code == code:
                    return check
        return None


def text(value: Decimal | None) -> str | None:
    """A decimal as API text, without exponent or trailing zeros."""
    return None if value is None else format(value.normalize(), "f")


def applies(limit: Limit, order: OrderSpec, account_id: str) -> bool:
    if limit.scope == LimitScope.TENANT:
        return True
    if limit.scope == LimitScope.ACCOUNT:
        return limit.scope_id == account_id
    if limit.scope == LimitScope.INSTRUMENT:
        return limit.scope_id in (order.instrument_id, order.symbol.upper())
    return order.strategy_id is not None and limit.scope_id == order.strategy_id


# -- the shape of the account after the order ------------------------------------------------


@dataclass(frozen=True, slots=True)
class _View:
    snapshot: Snapshot
    order: OrderSpec
    price: Decimal | None  # the price the order is valued at
    others: tuple[OpenOrder, ...]  # open orders, without the one a modification replaces
    same: tuple[Decimal, ...]  # signed remaining of the others in the order's instrument
    memo: dict[str, Any] = field(default_factory=dict)  # exposures derived once per evaluation

    @property
    def holding(self) -> Holding | None:
        return self.snapshot.holdings.get(self.order.instrument_id)

    @property
    def position(self) -> Decimal:
        holding = self.holding
        return holding.quantity if holding is not None else ZERO

    def same_instrument(self) -> list[Decimal]:
        return list(self.same)

    def reduces(self) -> bool:
        """Whether the order (with every open order on its side) can only shrink the position."""
        position = self.position
        if position == ZERO or (position > ZERO) == (self.order.side == "BUY"):
            return False
        same_side = sum((abs(w) for w in self.same if (w > ZERO) == (self.order.side == "BUY")), ZERO)
        return self.order.quantity + same_side <= abs(position)


def _view(snapshot: Snapshot, order: OrderSpec) -> _View:
    holding = snapshot.holdings.get(order.instrument_id)
    price = order.limit_price or order.stop_price or (holding.price if holding is not None else None)
    others = tuple(o for o in snapshot.open_orders if o.order_id != order.replaces)
    same = tuple(o.signed() for o in others if o.instrument_id == order.instrument_id)
    return _View(snapshot, order, price, others, same)


# -- gross exposure, incrementally -------------------------------------------------------------
#
# Gross exposure is a sum over instruments (exposure.gross), and an order moves only its own
# instrument: the rest of the book is summed once per evaluation (`_rest`), and each variant the
# gates need (before the order, with it as an open order, with it filled) only recomputes the
# order's instrument. Same figures as exposure.gross over the whole book, in one pass.


@dataclass(frozen=True, slots=True)
class _Rest:
    current: Decimal
    potential: Decimal
    unpriced: tuple[tuple[str, str], ...]  # (instrument id, label), as exposure.gross lists them


def _rest(view: _View) -> _Rest:
    """Exposure of every instrument but the order's (its holdings and the other open orders)."""
    cached = view.memo.get("rest")
    if cached is not None:
        return cast(_Rest, cached)
    skip = view.order.instrument_id
    working: dict[str, list[Decimal]] = {}
    for o in view.others:
        if o.instrument_id != skip:
            working.setdefault(o.instrument_id, []).append(o.signed())
    holdings = view.snapshot.holdings
    current = potential = ZERO
    unpriced: list[tuple[str, str]] = []
    for key, holding in holdings.items():
        if key == skip:
            continue
        price, quantity = holding.price, holding.quantity
        if price is None:
            if quantity or key in working:
                unpriced.append((key, holding.symbol))
            continue
        value = price * holding.multiplier
        current += abs(quantity) * value
        orders = working.get(key)
        potential += (worst_position(quantity, orders) if orders else abs(quantity)) * value
    unpriced.extend((key, key) for key in working if key not in holdings)
    rest = _Rest(current, potential, tuple(sorted(unpriced)))
    view.memo["rest"] = rest
    return rest


def _order_holding(view: _View) -> Holding:
    """The order's instrument as held, valued at the order's price when it has no price of its own."""
    order, holding = view.order, view.holding
    if holding is None:
        return Holding(order.instrument_id, order.symbol, ZERO, view.price, order.multiplier)
    if holding.price is None and view.price is not None:
        return Holding(holding.instrument_id, holding.symbol, holding.quantity, view.price, holding.multiplier)
    return holding


def _exposure(view: _View, *, with_order: bool = False, filled: bool = False) -> Exposure:
    """The account's gross exposure without the order, with it as an open order, or with it filled."""
    key = f"exposure:{with_order}:{filled}"
    cached = view.memo.get(key)
    if cached is not None:
        return cast(Exposure, cached)
    rest, held = _rest(view), _order_holding(view)
    quantity = held.quantity + view.order.signed() if filled else held.quantity
    working = [*view.same, view.order.signed()] if with_order else list(view.same)
    unpriced = list(rest.unpriced)
    current, potential = rest.current, rest.potential
    if held.price is None:
        if quantity or working:
            unpriced.append((held.instrument_id, held.symbol))
            unpriced.sort()
    else:
        value = held.price * held.multiplier
        current += abs(quantity) * value
        potential += worst_position(quantity, working) * value
    exposure = Exposure(current, potential, tuple(label for _, label in unpriced))
    view.memo[key] = exposure
    return exposure


# -- the gates ---------------------------------------------------------------------------------


def _halted(view: _View) -> list[Check]:
    halts = view.snapshot.halts
    if not halts:
        return [
            Check("kill_switch", True, "no kill switch or halting breaker covers this order", Code.KILL_SWITCH_ACTIVE)
        ]
    first = halts[0]
    return [
        Check(
            "kill_switch",
            False,
            f"Trading is HALTED by {first.source} {first.source_id}: {first.reason}",
            Code.KILL_SWITCH_ACTIVE,
            limit_id=first.source_id,
            inputs={"halts": [{"source": h.source, "id": h.source_id, "reason": h.reason} for h in halts]},
        )
    ]


def _reducing_only(view: _View) -> list[Check]:
    snapshot = view.snapshot
    reasons = list(snapshot.reducing_reasons)
    if snapshot.trading_state == TradingState.REDUCING and not reasons:
        reasons.append("trading state REDUCING")
    if snapshot.derisk_state != DeriskState.NORMAL:
        reasons.append(f"de-risk state {snapshot.derisk_state.value}")
    inputs = {"position": text(view.position), "reasons": reasons}
    if not reasons:
        return [Check("trading_state", True, "trading state ACTIVE", inputs=inputs)]
    reduces = view.reduces()
    detail = (
        f"only orders that reduce the position pass ({'; '.join(reasons)}); this one "
        f"{'reduces' if reduces else 'does not reduce'} the position of {text(view.position)}"
    )
    return [Check("trading_state", reduces, detail, inputs=inputs)]


def _compare(
    limit: Limit, *, value: Decimal | None, gate_label: str, unit: str = "", relaxed: bool = False, **inputs: Any
) -> Check:
    """`value` ≤ limit passes; `relaxed` passes an order that does not make the figure worse."""
    base: dict[str, Any] = {"limit_id": limit.id, "limit_version": limit.version, "limit": text(limit.value)}
    if value is None:
        if limit.builtin:
            return Check(limit.kind.value, True, f"{gate_label}: no price, not evaluated", inputs=inputs, **base)
        return Check(limit.kind.value, False, f"{gate_label}: no price to value the order", inputs=inputs, **base)
    ok = value <= limit.value or relaxed
    relation = "within" if value <= limit.value else ("exceeds, but the order reduces it;" if relaxed else "exceeds")
    detail = f"{gate_label} {text(value)}{unit} {relation} limit {text(limit.value)}{unit}"
    return Check(limit.kind.value, ok, detail, value=text(value), inputs=inputs, **base)


def _order_qty(view: _View, limit: Limit) -> Check:
    return _compare(limit, value=view.order.quantity, gate_label="Order quantity")


def _order_notional(view: _View, limit: Limit) -> Check:
    price = view.price
    notional = None if price is None else view.order.quantity * price * view.order.multiplier
    return _compare(limit, value=notional, gate_label="Order notional", price=text(price))


def _position_qty(view: _View, limit: Limit) -> Check:
    same = view.same_instrument()
    before = worst_position(view.position, same)
    after = worst_position(view.position, [*same, view.order.signed()])
    check = _compare(
        limit,
        value=after,
        gate_label="Worst-case position",
        relaxed=after <= before,
        position=text(view.position),
        open_orders=text(sum(same, ZERO)),
    )
    return _with_projection(check, position=text(view.position + view.order.signed()), potential_position=text(after))


def _with_projection(check: Check, **projected: Any) -> Check:
    return Check(
        check.gate,
        check.passed,
        check.detail,
        check.code,
        check.limit_id,
        check.limit_version,
        check.value,
        check.limit,
        check.inputs,
        {**check.projected, **projected},
        check.retry_after,
    )


def _gross(view: _View, limit: Limit) -> Check:
    snapshot = view.snapshot
    before = _exposure(view)
    after = _exposure(view, with_order=True)
    if snapshot.equity <= ZERO:
        return Check(
            limit.kind.value,
            limit.builtin,
            f"equity {text(snapshot.equity)} is not positive: gross exposure cannot be measured",
            limit_id=limit.id,
            limit_version=limit.version,
            limit=text(limit.value),
        )
    after_now = pct(_exposure(view, filled=True).current, snapshot.equity)
    after_potential = pct(after.potential, snapshot.equity)
    unpriced = view.order.symbol in after.unpriced or view.order.instrument_id in after.unpriced
    check = _compare(
        limit,
        value=None if unpriced else after_potential,
        gate_label="Potential gross exposure",
        unit="%",
        relaxed=after.potential <= before.potential,
        equity=text(snapshot.equity),
        current_gross=text(before.current),
        potential_gross=text(before.potential),
        unpriced=list(after.unpriced),
    )
    return _with_projection(
        check, gross_exposure_pct=text(after_now), potential_gross_exposure_pct=text(after_potential)
    )


def _concentration(view: _View, limit: Limit) -> Check:
    equity = view.snapshot.equity
    price = view.price
    same = view.same_instrument()
    before = worst_position(view.position, same)
    after = worst_position(view.position, [*same, view.order.signed()])
    share = None if price is None or equity <= ZERO else pct(after * price * view.order.multiplier, equity)
    return _compare(
        limit,
        value=share,
        gate_label=f"Potential share of {view.order.symbol} in equity",
        unit="%",
        relaxed=after <= before,
        equity=text(equity),
        price=text(price),
    )


def _open_orders(view: _View, limit: Limit) -> Check:
    count = len(view.others) + 1
    check = _compare(limit, value=Decimal(count), gate_label="Open orders with this one", open_orders=len(view.others))
    return _with_projection(check, open_orders=count)


def _order_rate(view: _View, limit: Limit) -> Check:
    period = limit.period_seconds or 1
    since = view.snapshot.now - timedelta(seconds=period)
    window = sorted(at for at in view.snapshot.recent_submissions if at > since)
    base: dict[str, Any] = {"limit_id": limit.id, "limit_version": limit.version, "limit": text(limit.value)}
    if view.order.replaces is not None:
        return Check(limit.kind.value, True, "modifications do not count towards the order rate", **base)
    count = len(window) + 1
    if count <= limit.value:
        return Check(
            limit.kind.value,
            True,
            f"{count} orders in {period} s within limit {text(limit.value)}",
            value=str(count),
            **base,
        )
    # The order passes again once enough of the window's orders have aged out of it.
    excess = count - int(limit.value)
    oldest = window[min(excess, len(window)) - 1] if window else view.snapshot.now
    wait = max(1, int(((oldest + timedelta(seconds=period)) - view.snapshot.now).total_seconds() + 0.999))
    return Check(
        limit.kind.value,
        False,
        f"{count} orders in {period} s exceeds limit {text(limit.value)}",
        Code.RATE_LIMITED,
        value=str(count),
        retry_after=wait,
        inputs={"period_seconds": period},
        **base,
    )


def _loss(view: _View, limit: Limit) -> Check:
    snapshot = view.snapshot
    if limit.kind == LimitKind.DAILY_LOSS:
        loss, label = max(ZERO, -snapshot.day_pnl), "Today's loss"
    else:
        loss, label = max(ZERO, snapshot.peak_equity - snapshot.equity), "Drawdown from peak equity"
    breached = loss >= limit.value
    reduces = view.reduces()
    base: dict[str, Any] = {
        "limit_id": limit.id,
        "limit_version": limit.version,
        "limit": text(limit.value),
        "value": text(loss),
    }
    inputs = {
        "equity": text(snapshot.equity),
        "peak_equity": text(snapshot.peak_equity),
        "day_pnl": text(snapshot.day_pnl),
    }
    if not breached:
        return Check(
            limit.kind.value, True, f"{label} {text(loss)} within limit {text(limit.value)}", inputs=inputs, **base
        )
    detail = f"{label} {text(loss)} reached limit {text(limit.value)}: only orders that reduce the position pass"
    return Check(limit.kind.value, reduces, detail, inputs=inputs, **base)


def _price_band(view: _View, limit: Limit) -> Check:
    order = view.order
    base: dict[str, Any] = {"limit_id": limit.id, "limit_version": limit.version, "limit": text(limit.value)}
    price = order.limit_price
    if price is None:
        return Check(limit.kind.value, True, "no limit price: the price band does not apply", **base)
    last = view.snapshot.last_prices.get(order.instrument_id)
    if last is None or last <= ZERO:
        return Check(limit.kind.value, False, f"no last price of {order.symbol} to check the price band", **base)
    distance = (abs(price - last) / last * 100).quantize(Decimal("0.0001"))
    return _compare(
        limit,
        value=distance,
        gate_label=f"Limit price {text(price)} is away from last {text(last)} by",
        unit="%",
        last_price=text(last),
        limit_price=text(price),
    )


GATES: Mapping[LimitKind, Callable[[_View, Limit], Check]] = {
    LimitKind.MAX_ORDER_QTY: _order_qty,
    LimitKind.MAX_ORDER_NOTIONAL: _order_notional,
    LimitKind.MAX_POSITION_QTY: _position_qty,
    LimitKind.MAX_GROSS_EXPOSURE: _gross,
    LimitKind.MAX_OPEN_ORDERS: _open_orders,
    LimitKind.ORDER_RATE: _order_rate,
    LimitKind.DAILY_LOSS: _loss,
    LimitKind.TRAILING_DRAWDOWN: _loss,
    LimitKind.CONCENTRATION: _concentration,
    LimitKind.PRICE_BAND: _price_band,
}


# The limits a working order's residual is checked against again after a partial fill: those
# whose figures move with the position, prices and equity (the order-level ones were settled at entry).
RESIDUAL_KINDS = frozenset(
    {
        LimitKind.MAX_POSITION_QTY,
        LimitKind.MAX_GROSS_EXPOSURE,
        LimitKind.CONCENTRATION,
        LimitKind.DAILY_LOSS,
        LimitKind.TRAILING_DRAWDOWN,
    }
)


def residual_breaches(snapshot: Snapshot, residual: OrderSpec) -> tuple[Check, ...]:
    """The checks the rest of a partly filled order fails now (`residual.replaces` names the order,
    its quantity is what remains): only the limits of RESIDUAL_KINDS, which a fill, a price move or a
    lowered limit can turn; an empty tuple when the residual may keep working."""
    view = _view(snapshot, residual)
    failed = []
    for limit in snapshot.limits:
        if limit.kind in RESIDUAL_KINDS and applies(limit, residual, snapshot.account_id):
            check = GATES[limit.kind](view, limit)
            if not check.passed:
                failed.append(check)
    return tuple(failed)


def evaluate(snapshot: Snapshot, order: OrderSpec) -> Evaluation:
    """Run every gate; a kind with no applicable limit still reports a passing check."""
    view = _view(snapshot, order)
    checks = [*_halted(view), *_reducing_only(view)]
    applicable = [limit for limit in snapshot.limits if applies(limit, order, snapshot.account_id)]
    for kind in LimitKind:
        limits = [limit for limit in applicable if limit.kind == kind]
        if not limits:
            checks.append(Check(kind.value, True, f"no {kind.value} limit applies"))
        checks.extend(GATES[kind](view, limit) for limit in limits)
    after = _exposure(view, with_order=True)
    current_pct = _exposure(view, filled=True).percent(snapshot.equity)[0]
    potential_pct = after.percent(snapshot.equity)[1]
    projected = {
        "position": text(view.position + order.signed()),
        "gross_exposure": {
            "current": text(current_pct),
            "potential": text(potential_pct),
            "unpriced": list(after.unpriced),
        },
        "open_orders": len(view.others) + 1,
    }
    return Evaluation(tuple(checks), projected)
