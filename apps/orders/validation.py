"""Order field rules of API.md, as a pure function: which price fields each type needs or forbids,
time-in-force rules, tick and lot sizes, and the legs of BRACKET / OCO / OTO orders.

`order_problems` returns every problem at once as `{"field.path": ["message", …]}`, so a client
fixes its request in one round trip. No Django here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

ZERO = Decimal(0)
HUNDRED = Decimal(100)

# Which price fields each order type needs; every price field not listed is forbidden.
REQUIRED_PRICES: dict[str, frozenset[str]] = {
    "MKT": frozenset(),
    "LMT": frozenset({"limit_price"}),
    "STP": frozenset({"stop_price"}),
    "STP_LMT": frozenset({"limit_price", "stop_price"}),
    "TRAIL": frozenset(),  # exactly one of trail_amount / trail_percent, checked apart
    "MOC": frozenset(),
    "LOC": frozenset({"limit_price"}),
}
TRAIL_FIELDS = ("trail_amount", "trail_percent")
PRICE_FIELDS = ("limit_price", "stop_price", *TRAIL_FIELDS)
ON_CLOSE = frozenset({"MOC", "LOC"})


@dataclass(frozen=True, slots=True)
class Rules:
    """What the instrument allows."""

    tick_size: Decimal
    lot_size: Decimal


@dataclass(frozen=True, slots=True)
class Leg:
    """`take_profit` ({limit_price}) or `stop_loss` ({stop_price, limit_price?})."""

    limit_price: Decimal | None = None
    stop_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class OrderFields:
    side: str
    quantity: Decimal
    order_type: str
    time_in_force: str
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_amount: Decimal | None = None
    trail_percent: Decimal | None = None
    good_till: datetime | None = None
    order_class: str = "SIMPLE"
    take_profit: Leg | None = None
    stop_loss: Leg | None = None


Problems = dict[str, list[str]]


def _add(problems: Problems, field: str, message: str) -> None:
    problems.setdefault(field, []).append(message)


def plain(value: Decimal) -> str:
    """`1000`, not `1E+3`."""
    return format(value.normalize(), "f")


def on_increment(value: Decimal, increment: Decimal) -> bool:
    return value % increment == ZERO


def check_price(problems: Problems, field: str, value: Decimal | None, rules: Rules) -> None:
    if value is None:
        return
    if value <= ZERO:
        _add(problems, field, "must be greater than 0")
    elif not on_increment(value, rules.tick_size):
        _add(problems, field, f"{value} is not a multiple of the tick size {plain(rules.tick_size)}")


def check_quantity(problems: Problems, quantity: Decimal, rules: Rules, field: str = "quantity") -> None:
    if quantity <= ZERO:
        _add(problems, field, "must be greater than 0")
    elif not on_increment(quantity, rules.lot_size):
        _add(problems, field, f"{quantity} is not a multiple of the lot size {plain(rules.lot_size)}")


def price_problems(order: OrderFields, rules: Rules) -> Problems:
    """Problems of the price fields alone (also used when a modification changes them)."""
    problems: Problems = {}
    required = REQUIRED_PRICES[order.order_type]
    values = {name: getattr(order, name) for name in PRICE_FIELDS}
    for name in ("limit_price", "stop_price"):
        if name in required and values[name] is None:
            _add(problems, name, f"required for order type {order.order_type}")
        elif name not in required and values[name] is not None:
            _add(problems, name, f"not allowed for order type {order.order_type}")
    if order.order_type == "TRAIL":
        given = [name for name in TRAIL_FIELDS if values[name] is not None]
        if len(given) != 1:
            for name in TRAIL_FIELDS:
                _add(problems, name, "TRAIL needs exactly one of trail_amount and trail_percent")
    else:
        for name in TRAIL_FIELDS:
            if values[name] is not None:
                _add(problems, name, f"not allowed for order type {order.order_type}")
    for name in ("limit_price", "stop_price", "trail_amount"):
        if name not in problems:
            check_price(problems, name, values[name], rules)
    percent = order.trail_percent
    if percent is not None and "trail_percent" not in problems and not ZERO < percent < HUNDRED:
        _add(problems, "trail_percent", "must be between 0 and 100 (exclusive)")
    return problems


def order_problems(order: OrderFields, rules: Rules, *, now: datetime) -> Problems:
    """Every problem of a new order request; empty when it may be placed."""
    problems = price_problems(order, rules)
    check_quantity(problems, order.quantity, rules)
    _time_in_force(problems, order, now=now)
    _legs(problems, order, rules)
    return problems


def _time_in_force(problems: Problems, order: OrderFields, *, now: datetime) -> None:
    if order.time_in_force == "GTD":
        if order.good_till is None:
            _add(problems, "good_till", "required when time_in_force is GTD")
        elif order.good_till.tzinfo is None:
            _add(problems, "good_till", "must carry a time zone (RFC 3339, e.g. 2026-11-21T21:00:00Z)")
        elif order.good_till <= now:
            _add(problems, "good_till", "must be in the future")
    elif order.good_till is not None:
        _add(problems, "good_till", "allowed only when time_in_force is GTD")
    if order.order_type in ON_CLOSE and order.time_in_force != "DAY":
        _add(problems, "time_in_force", f"{order.order_type} orders must be DAY")


def _legs(problems: Problems, order: OrderFields, rules: Rules) -> None:
    wanted = {
        "SIMPLE": (frozenset(), frozenset({"take_profit", "stop_loss"})),
        "BRACKET": (frozenset({"take_profit", "stop_loss"}), frozenset()),
        "OCO": (frozenset({"stop_loss"}), frozenset({"take_profit"})),
        "OTO": (frozenset(), frozenset()),
    }[order.order_class]
    required, forbidden = wanted
    legs = {"take_profit": order.take_profit, "stop_loss": order.stop_loss}
    for name, leg in legs.items():
        if name in required and leg is None:
            _add(problems, name, f"required for order_class {order.order_class}")
        if name in forbidden and leg is not None:
            _add(problems, name, f"not allowed for order_class {order.order_class}")
    if order.order_class == "OTO" and (order.take_profit is None) == (order.stop_loss is None):
        _add(problems, "order_class", "OTO needs exactly one of take_profit and stop_loss (the triggered order)")
    if order.order_class != "SIMPLE" and order.time_in_force in ("IOC", "FOK"):
        _add(problems, "time_in_force", f"{order.time_in_force} cannot carry linked legs")
    take_profit, stop_loss = order.take_profit, order.stop_loss
    if take_profit is not None:
        if take_profit.limit_price is None:
            _add(problems, "take_profit.limit_price", "required")
        if take_profit.stop_price is not None:
            _add(problems, "take_profit.stop_price", "not allowed (a take-profit is a limit order)")
        check_price(problems, "take_profit.limit_price", take_profit.limit_price, rules)
    if stop_loss is not None:
        if stop_loss.stop_price is None:
            _add(problems, "stop_loss.stop_price", "required")
        check_price(problems, "stop_loss.stop_price", stop_loss.stop_price, rules)
        check_price(problems, "stop_loss.limit_price", stop_loss.limit_price, rules)
    if order.order_class == "BRACKET" and not problems and take_profit is not None and stop_loss is not None:
        profit, stop = take_profit.limit_price, stop_loss.stop_price
        if profit is not None and stop is not None:
            _bracket_prices(problems, order, profit=profit, stop=stop)


def _bracket_prices(problems: Problems, order: OrderFields, *, profit: Decimal, stop: Decimal) -> None:
    """The exits must sit on the right sides: above and below the entry for a buy, reversed for a sell."""
    buy = order.side == "BUY"
    if (profit <= stop) if buy else (profit >= stop):
        relation = "above" if buy else "below"
        _add(problems, "take_profit.limit_price", f"must be {relation} stop_loss.stop_price for a {order.side} entry")
    entry = order.limit_price
    if entry is not None:
        if (profit <= entry) if buy else (profit >= entry):
            _add(problems, "take_profit.limit_price", f"must be {'above' if buy else 'below'} the entry limit_price")
        if (stop >= entry) if buy else (stop <= entry):
            _add(problems, "stop_loss.stop_price", f"must be {'below' if buy else 'above'} the entry limit_price")
