"""Routing: after commit, a signed command for the account's connector goes onto its stream.

Publishing happens in `transaction.on_commit`, never inside the transaction, so a command never
describes an order that was rolled back. If Redis refuses, the order stays NEW and
`orders_reroute_task` sends the command again; connectors ignore an order id they already know.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import redis
import structlog
from django.utils import timezone

from apps.events.commands import command_publish
from apps.orders.models import Order
from apps.orders.serializers import dec, ts
from apps.risk.sessions import session_open

log = structlog.get_logger(__name__)


def order_command(order: Order, *, index: int, con_id: int | None) -> dict[str, Any]:
    """One order as a connector needs it (our client_order_id travels to IB as orderRef)."""
    return {
        "order_index": index,
        "order_id": str(order.id),
        "tenant_id": str(order.tenant_id),
        "client_order_id": order.client_order_id,
        "broker_order_id": order.broker_order_id or None,
        "symbol": order.symbol,
        "instrument_id": str(order.instrument_id),
        "con_id": con_id,
        "side": order.side,
        "quantity": dec(order.quantity),
        "order_type": order.order_type,
        "limit_price": dec(order.limit_price),
        "stop_price": dec(order.stop_price),
        "trail_amount": dec(order.trail_amount),
        "trail_percent": dec(order.trail_percent),
        "time_in_force": order.time_in_force,
        "good_till": ts(order.good_till),
        "outside_rth": order.outside_rth,
        "parent_id": str(order.parent_id) if order.parent_id else None,
        "oca_group": order.oca_group or None,
    }


def command_payload(orders: Sequence[Order], *, con_id: int | None) -> dict[str, Any]:
    first = orders[0]
    return {
        "msg_id": uuid.uuid4().hex,
        "tenant_id": str(first.tenant_id),
        "account_id": str(first.account_id),
        "orders": [order_command(order, index=index, con_id=con_id) for index, order in enumerate(orders)],
    }


def held(*, account_id: Any, payload: dict[str, Any], now: datetime | None = None) -> bool:
    """Whether a submission waits for the next session: the account's market is closed and the
    order (the first of the payload: the parent of a bracket) does not ask for `outside_rth`.
    Held orders stay NEW; `orders_release_held_task` routes them once the session opens."""
    orders = payload.get("orders") or [{}]
    if orders[0].get("outside_rth"):
        return False
    is_open, next_open = session_open(account_id, now or timezone.now())
    if not is_open:
        log.info("orders.held", account_id=str(account_id), orders=len(orders), next_open=str(next_open))
    return not is_open


def send(*, account_id: Any, kind: str, payload: dict[str, Any], check_session: bool = True) -> str | None:
    """Publish a command (called on commit); a Redis failure is logged and left to the sweep.

    A submission outside the account's regular session is held (not published) unless it is
    `outside_rth`; cancels and modifications always go."""
    if kind == "oms.submit" and check_session and held(account_id=account_id, payload=payload):
        return None
    try:
        entry_id = command_publish(account_id=account_id, kind=kind, payload=payload)
    except redis.RedisError as exc:
        log.warning("orders.route_failed", account_id=str(account_id), kind=kind, error=str(exc))
        return None
    log.info("orders.routed", account_id=str(account_id), kind=kind, msg_id=payload.get("msg_id"), entry=entry_id)
    return entry_id
