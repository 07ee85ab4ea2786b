"""The order core's side of the de-risk playbook: turn reduction intents into orders.

Risk records a `ReductionIntent` and announces it on `ev.intents`; `intents_consume` reads that
stream (consumer group `oms-intents`) and `intent_execute` places each intent through the normal
placement service as a system actor, so every gate applies (in SOFT/HARD_DERISK a reduction
passes because it reduces the position). Placing is idempotent per intent: the Idempotency-Key
and the client_order_id derive from the intent id, so a redelivered entry replays the first
order instead of placing a second one. The order is a marketable limit with `outside_rth` (the
playbook runs after the regular close). The intent row records the order or the refusal.
PENDING intents older than a minute are swept too, in case the stream entry was lost.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

import orjson
import redis
import structlog

from apps.common.context import Actor
from apps.common.errors import DomainError
from apps.common.redis import get_redis
from apps.events.streams import StreamConsumer
from apps.orders import validation
from apps.orders.services.idempotency import request_fingerprint
from apps.orders.services.placement import Member, PlaceRequest, order_place
from apps.risk.models import ReductionIntent
from apps.risk.services.playbook import INTENTS, REDUCTION_INTENT, intent_settle

log = structlog.get_logger(__name__)
GROUP = "oms-intents"
PLAYBOOK = Actor.system("derisk-playbook")
SWEEP_AFTER = timedelta(minutes=1)


def intent_execute(*, intent_id: UUID) -> ReductionIntent | None:
    """Place the order of one PENDING intent (a replay if it was placed already); record the outcome."""
    intent = ReductionIntent.objects.select_related("tenant", "instrument").filter(id=intent_id).first()
    if intent is None or intent.status != ReductionIntent.Status.PENDING:
        return intent
    price = intent.inputs.get("limit_price")
    fields = validation.OrderFields(
        side=intent.side,
        quantity=intent.quantity,
        order_type="LMT" if price else "MKT",
        time_in_force="DAY",
        limit_price=Decimal(price) if price else None,
    )
    request = PlaceRequest(
        account_id=intent.account_id,
        symbol=intent.instrument.symbol,
        currency=intent.instrument.currency,
        fields=fields,
        outside_rth=True,
        client_order_id=f"derisk-{intent.id.hex}",
        metadata={"reduction_intent_id": str(intent.id)},
    )
    member = Member(tenant=intent.tenant, actor=PLAYBOOK, user=None, role=None)
    fingerprint = request_fingerprint(operation="reduction intent", payload={"intent_id": str(intent.id)})
    try:
        outcome = order_place(
            member=member, request=request, idempotency_key=f"derisk-intent-{intent.id}", fingerprint=fingerprint
        )
    except DomainError as error:
        log.warning("orders.intent_refused", intent=str(intent.id), code=error.code, message=error.message)
        return intent_settle(intent_id=intent.id, order_id=None, error=f"{error.code}: {error.message}", actor=PLAYBOOK)
    order_id = outcome.body.get("id") if isinstance(outcome.body, dict) else None
    if order_id is None:  # a replay of a refusal cannot happen (refusals are not stored), but be explicit
        return intent_settle(intent_id=intent.id, order_id=None, error="placement returned no order", actor=PLAYBOOK)
    log.info("orders.intent_ordered", intent=str(intent.id), order=order_id, replayed=outcome.replayed)
    return intent_settle(intent_id=intent.id, order_id=UUID(str(order_id)), error="", actor=PLAYBOOK)


def intents_consume(*, now: datetime, client: redis.Redis | None = None) -> int:
    """Execute the intents announced on `ev.intents` (and PENDING ones the stream did not deliver)."""
    client = client or get_redis()
    consumer = StreamConsumer(
        client=client, stream=INTENTS, group=GROUP, consumer=f"{socket.gethostname()}-{os.getpid()}"
    )
    done = 0
    try:
        consumer.ensure_group()
        entries = consumer.read(count=100, block_ms=None)
    except redis.RedisError as exc:
        log.warning("orders.intents_stream_unavailable", error=str(exc))
        entries = []
    for entry_id, fields in entries:
        if fields.get("kind") == REDUCTION_INTENT:
            try:
                intent_execute(intent_id=UUID(orjson.loads(fields["payload"])["id"]))
                done += 1
            except (KeyError, ValueError, orjson.JSONDecodeError) as exc:
                log.error("orders.intent_malformed", entry=entry_id, error=repr(exc))
        consumer.ack(entry_id)
    stale = ReductionIntent.objects.filter(status=ReductionIntent.Status.PENDING, created_at__lt=now - SWEEP_AFTER)
    for intent_id in list(stale.values_list("id", flat=True)[:100]):
        intent_execute(intent_id=intent_id)
        done += 1
    return done
