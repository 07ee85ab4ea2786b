"""Periodic work of orders: purge expired idempotency keys, resend commands the broker never
acknowledged, release orders held outside the session, expire DAY / GTD orders, and turn the
de-risk playbook's reduction intents into orders."""

from __future__ import annotations

from datetime import timedelta
from itertools import groupby

import structlog
from celery import shared_task
from django.utils import timezone

from apps.orders.models import Order
from apps.orders.services import routing
from apps.orders.services.idempotency import idempotency_purge
from apps.orders.services.intents import intents_consume
from apps.orders.services.risk import kill_switch_enforce
from apps.orders.services.sessions import held_release, orders_expire
from apps.orders.state import OrderState
from apps.risk.models import KillSwitch

log = structlog.get_logger(__name__)
UNACKNOWLEDGED_AFTER = timedelta(seconds=30)
RESEND_WINDOW = timedelta(hours=1)


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90)
def idempotency_purge_task() -> int:
    """Delete idempotency records older than their 24 hours."""
    deleted = idempotency_purge()
    log.info("orders.idempotency_purged", deleted=deleted)
    return deleted


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90)
def orders_reroute_task() -> int:
    """Send `oms.submit` again for recent orders still NEW (the first send may have been lost).

    Connectors ignore an order id they already know, so a resend is harmless.
    """
    now = timezone.now()
    stale = (
        Order.objects.filter(
            state=OrderState.NEW.value,
            created_at__lt=now - UNACKNOWLEDGED_AFTER,
            created_at__gte=now - RESEND_WINDOW,
        )
        .select_related("instrument")
        .order_by("account_id", "created_at")[:1000]
    )
    resent = 0
    for account_id, orders in groupby(stale, key=lambda order: order.account_id):
        batch = list(orders)
        payload = routing.command_payload(batch, con_id=None)
        for item, order in zip(payload["orders"], batch, strict=True):
            item["con_id"] = order.instrument.con_id
        if routing.send(account_id=account_id, kind="oms.submit", payload=payload):
            resent += len(batch)
    return resent


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def kill_switches_enforce_task() -> int:
    """Backstop of `run_risk_actions`: cancel what every active kill switch still covers."""
    switches = KillSwitch.objects.filter(active=True).values_list("id", flat=True)
    return sum(kill_switch_enforce(kill_switch_id=switch_id) for switch_id in switches)


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90)
def orders_release_held_task() -> int:
    """Route the orders held outside their account's session once it opens."""
    return held_release(now=timezone.now())


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def orders_expire_task() -> int:
    """Expire DAY orders at their session's close and GTD orders at `good_till`."""
    return orders_expire(now=timezone.now())


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90)
def reduction_intents_task() -> int:
    """Place the de-risk playbook's reduction intents (from `ev.intents`, and any left PENDING)."""
    return intents_consume(now=timezone.now())
