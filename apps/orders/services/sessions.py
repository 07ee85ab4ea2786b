"""Calendar-driven order handling: releasing orders held outside the session, and expiring DAY and
GTD orders.

Held orders: a submission outside the account's regular session stays NEW and is not sent
(`routing.held`); `held_release` sends every NEW order created before the current session opened,
once it is open (connectors ignore an order id they already know, so a repeat is harmless).

Expiry: a DAY order lives until the first session close after it was placed (accounts on an
always-open calendar have no close: their DAY orders do not expire); a GTD order until its
`good_till`. An expired order that never left us (NEW) becomes EXPIRED at once; a working one is
cancelled at the broker (PENDING_CANCEL, then CANCELED when the broker confirms), with the
reason in its event and its audit row either way. Every function takes `now` (the clock of the
tests).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from itertools import groupby
from uuid import UUID

import structlog
from django.db import transaction

from apps.common.context import Actor
from apps.compliance import calendars
from apps.orders.models import Order
from apps.orders.services import routing
from apps.orders.services.lifecycle import audit_order, order_move
from apps.orders.state import OPEN, OrderState
from apps.risk.sessions import calendar_of

log = structlog.get_logger(__name__)
SESSION = Actor.system("session-calendar")
OPEN_STATES = [state.value for state in OPEN]
HELD_FOR_AT_MOST = timedelta(days=7)
BATCH = 1000


def held_release(*, now: datetime) -> int:
    """Send the orders held while their account's market was closed, now that it is open."""
    accounts = (
        Order.objects.filter(state=OrderState.NEW.value, created_at__gte=now - HELD_FOR_AT_MOST)
        .values_list("account_id", flat=True)
        .distinct()
    )
    released = 0
    for account_id in list(accounts):
        name = calendar_of(account_id, fresh=True)
        if name == calendars.ALWAYS_OPEN or not calendars.facts(name, now).is_open:
            continue
        opened_at = calendars.session(name, now).open_at
        held = (
            Order.objects.filter(
                account_id=account_id,
                state=OrderState.NEW.value,
                created_at__gte=now - HELD_FOR_AT_MOST,
                created_at__lt=opened_at,
            )
            .select_related("instrument")
            .order_by("created_at", "id")[:BATCH]
        )
        batch = sorted(held, key=lambda order: (str(order.parent_id or order.id), order.parent_id is not None))
        if not batch:
            continue
        for _, group in groupby(batch, key=lambda order: order.parent_id or order.id):
            orders = list(group)
            payload = routing.command_payload(orders, con_id=None)
            for item, order in zip(payload["orders"], orders, strict=True):
                item["con_id"] = order.instrument.con_id
            if routing.send(account_id=account_id, kind="oms.submit", payload=payload, check_session=False):
                released += len(orders)
        log.info("orders.held_released", account_id=str(account_id), calendar=name, orders=len(batch))
    return released


def _expire_one(order_id: UUID, *, reason: str) -> bool:
    with transaction.atomic(durable=True):
        order = Order.objects.select_for_update(of=("self",)).select_related("instrument").filter(id=order_id).first()
        if order is None or order.state not in OPEN_STATES or order.state == OrderState.PENDING_CANCEL.value:
            return False
        before = {"state": order.state, "version": order.version}
        target = OrderState.EXPIRED if order.state == OrderState.NEW.value else OrderState.PENDING_CANCEL
        order_move(order=order, to=target, actor=SESSION, reason=reason, detail={"expired": True})
        payload = routing.command_payload([order], con_id=order.instrument.con_id)
        transaction.on_commit(partial(routing.send, account_id=order.account_id, kind="oms.cancel", payload=payload))
        audit_order(order=order, actor=SESSION, action="order.expire", before={**before, "reason": reason})
    return True


def orders_expire(*, now: datetime) -> int:
    """Expire the GTD orders past their `good_till` and the DAY orders past their session close."""
    expired = 0
    gtd = Order.objects.filter(state__in=OPEN_STATES, time_in_force="GTD", good_till__lte=now).values_list(
        "id", "good_till"
    )
    for order_id, good_till in list(gtd[:BATCH]):
        expired += _expire_one(order_id, reason=f"GTD order expired at {good_till.isoformat()}")
    accounts = (
        Order.objects.filter(state__in=OPEN_STATES, time_in_force="DAY").values_list("account_id", flat=True).distinct()
    )
    for account_id in list(accounts):
        name = calendar_of(account_id, fresh=True)
        closed_at = calendars.previous_close(name, now)
        if closed_at is None:  # always open: DAY orders have no close to expire at
            continue
        day = Order.objects.filter(
            account_id=account_id, state__in=OPEN_STATES, time_in_force="DAY", created_at__lt=closed_at
        ).values_list("id", flat=True)
        for order_id in list(day[:BATCH]):
            expired += _expire_one(
                order_id, reason=f"DAY order expired at the {name} session close {closed_at.isoformat()}"
            )
    if expired:
        log.info("orders.expired", count=expired)
    return expired
