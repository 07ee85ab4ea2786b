"""The order, event and execution resources of API.md as JSON-ready dicts.

They are stored as they are (idempotent replays return the original body) and carried in
outbox events, so decimals are strings and timestamps RFC 3339 UTC with a `Z`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from apps.orders.models import Execution, Order, OrderEvent
from apps.orders.state import TERMINAL, OrderState

PRICE_QUANTUM = Decimal("1e-8")


def dec(value: Decimal | None) -> str | None:
    """A decimal as API.md writes it: a plain string without exponent or trailing zeros."""
    if value is None:
        return None
    text = format(Decimal(value).normalize(), "f")
    return "0" if text in ("-0", "0") else text


def ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def average_price(order: Order) -> Decimal | None:
    if not order.filled_quantity:
        return None
    return (order.filled_notional / order.filled_quantity).quantize(PRICE_QUANTUM, rounding=ROUND_HALF_UP)


def remaining(order: Order) -> Decimal:
    if OrderState(order.state) in TERMINAL:
        return Decimal(0)
    return max(order.quantity - order.filled_quantity, Decimal(0))


def order_to_dict(order: Order, *, legs: list[Order] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(order.id),
        "client_order_id": order.client_order_id,
        "broker_order_id": order.broker_order_id or None,
        "account_id": str(order.account_id),
        "symbol": order.symbol,
        "side": order.side,
        "quantity": dec(order.quantity),
        "filled_quantity": dec(order.filled_quantity),
        "remaining_quantity": dec(remaining(order)),
        "avg_fill_price": dec(average_price(order)),
        "order_type": order.order_type,
        "limit_price": dec(order.limit_price),
        "stop_price": dec(order.stop_price),
        "trail_amount": dec(order.trail_amount),
        "trail_percent": dec(order.trail_percent),
        "time_in_force": order.time_in_force,
        "good_till": ts(order.good_till),
        "outside_rth": order.outside_rth,
        "state": order.state,
        "reject_reason": order.reject_reason or None,
        "strategy_id": str(order.strategy_id) if order.strategy_id else None,
        "metadata": order.metadata,
        "version": order.version,
        "order_class": order.order_class,
        "parent_id": str(order.parent_id) if order.parent_id else None,
        "oca_group": order.oca_group or None,
        "created_at": ts(order.created_at),
        "updated_at": ts(order.updated_at),
        "routed_at": ts(order.routed_at),
        "closed_at": ts(order.closed_at),
    }
    if legs is not None:
        body["legs"] = [order_to_dict(leg) for leg in legs]
    return body


def event_to_dict(event: OrderEvent) -> dict[str, Any]:
    return {
        "id": str(event.id),
        "order_id": str(event.order_id),
        "seq": event.seq,
        "kind": event.kind,
        "from_state": event.from_state or None,
        "to_state": event.to_state,
        "detail": event.detail,
        "actor": event.actor_label,
        "created_at": ts(event.created_at),
    }


def execution_to_dict(execution: Execution) -> dict[str, Any]:
    return {
        "id": str(execution.id),
        "order_id": str(execution.order_id),
        "account_id": str(execution.account_id),
        "symbol": execution.symbol,
        "side": execution.side,
        "broker_exec_id": execution.broker_exec_id,
        "quantity": dec(execution.quantity),
        "price": dec(execution.price),
        "commission": dec(execution.commission),
        "currency": execution.currency,
        "executed_at": ts(execution.executed_at),
    }
