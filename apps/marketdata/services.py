"""Writes of market data subscriptions (each audited), and the publication of what the gateway must hold.

IB lines are shared: the gateway holds one per instrument that any tenant subscribed to. After
every change the union is published to Redis (`md:wanted`, then a ping on `md.control`) for the
gateway, which sits below this app and never reads our table. Publication happens after commit
and under a Redis lock, so the last publisher always read the database after every commit before
it (two concurrent changes can't leave an older union in place); the beat task
`feed_publish_task` republishes every minute in case Redis lost it.
"""

from __future__ import annotations

from uuid import UUID

import orjson
import redis
import structlog
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.brokers.models import Instrument
from apps.common.context import Actor
from apps.common.errors import NotFound, StateConflict, ValidationFailed
from apps.common.redis import get_redis
from apps.events.prices import FEED_CONTROL, FEED_SENTINEL, FEED_WANTED
from apps.marketdata import selectors
from apps.marketdata.models import MarketDataSubscription
from apps.marketdata.serializers import subscription_to_dict
from apps.tenants.models import Tenant

log = structlog.get_logger(__name__)

LINES_LOCK_KEY = 0x0D_11E5  # serialises the budget check of new lines (all tenants share them)
PUBLISH_LOCK = "md:wanted:publish"
CONTROL_MAXLEN = 1_000


def _instrument(symbol: str, exchange: str | None, currency: str | None) -> Instrument:
    try:
        return selectors.instrument_find(symbol=symbol, exchange=exchange, currency=currency)
    except NotFound as exc:
        raise ValidationFailed(exc.message, fields={"symbol": [f"no active instrument {symbol.upper()}"]}) from exc


@transaction.atomic(durable=True)
def subscription_create(
    *, tenant: Tenant, actor: Actor, symbol: str, exchange: str | None = None, currency: str | None = None
) -> tuple[MarketDataSubscription, bool]:
    """Subscribe the tenant to an instrument's quotes; return (subscription, created).

    Idempotent per instrument: subscribing again returns the existing subscription. A new
    instrument needs a free IB line; when the budget is spent the request conflicts with the
    feed's current state (409 STATE_CONFLICT: valid, but not now; it succeeds once a line frees up).
    """
    instrument = _instrument(symbol, exchange, currency)
    existing = MarketDataSubscription.objects.filter(tenant=tenant, instrument=instrument).first()
    if existing is not None:
        return existing, False
    # New subscriptions to new instruments queue here, so two can't both take the last line.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LINES_LOCK_KEY])
    if not MarketDataSubscription.objects.filter(instrument=instrument).exists():
        budget, in_use = settings.MARKETDATA_LINES_PER_LOGIN, selectors.feed_lines_in_use()
        if in_use >= budget:
            raise StateConflict(
                f"Market data line budget exhausted: {in_use} of {budget} IB lines are in use, "
                f"and {instrument.symbol} would need a new one",
                details={"symbol": instrument.symbol, "lines_in_use": in_use, "lines_budget": budget},
                hint="Unsubscribe from an instrument no longer needed, or raise MARKETDATA_LINES_PER_LOGIN "
                "if the IB login has more lines",
            )
    subscription, created = MarketDataSubscription.objects.get_or_create(
        tenant=tenant,
        instrument=instrument,
        defaults={"created_by_id": actor.user_id, "created_at": timezone.now()},
    )
    if created:
        subscription.instrument = instrument
        audit_record(
            tenant_id=tenant.id,
            actor=actor,
            action="marketdata.subscription.create",
            resource_type="marketdata_subscription",
            resource_id=subscription.id,
            after=subscription_to_dict(subscription),
        )
        transaction.on_commit(feed_publish_quietly)
    return subscription, created


def _delete(tenant: Tenant, actor: Actor, subscription: MarketDataSubscription) -> None:
    before = subscription_to_dict(subscription)
    subscription.delete()
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="marketdata.subscription.delete",
        resource_type="marketdata_subscription",
        resource_id=before["id"],
        before=before,
    )
    transaction.on_commit(feed_publish_quietly)


@transaction.atomic(durable=True)
def subscription_delete(*, tenant: Tenant, actor: Actor, subscription_id: UUID) -> None:
    """Unsubscribe; the gateway cancels the line when no tenant wants the instrument any more."""
    subscription = selectors.subscription_get(tenant=tenant, subscription_id=subscription_id)
    _delete(tenant, actor, subscription)


@transaction.atomic(durable=True)
def subscription_delete_for_symbol(
    *, tenant: Tenant, actor: Actor, symbol: str, exchange: str | None = None, currency: str | None = None
) -> None:
    """Unsubscribe from the instrument a symbol names."""
    instrument = selectors.instrument_find(symbol=symbol, exchange=exchange, currency=currency)
    subscription = MarketDataSubscription.objects.filter(tenant=tenant, instrument=instrument).first()
    if subscription is None:
        raise NotFound(f"No market data subscription to {instrument.symbol}")
    subscription.instrument = instrument
    _delete(tenant, actor, subscription)


def feed_publish() -> int:
    """Publish the union of every tenant's subscriptions to `md:wanted` and ping the gateway.

    Return how many instruments it holds. Raises redis errors (see `feed_publish_quietly`).
    """
    client = get_redis()
    with client.lock(PUBLISH_LOCK, timeout=10, blocking_timeout=10):
        union = selectors.feed_union()
        mapping: dict[str, bytes | str] = {FEED_SENTINEL: timezone.now().isoformat()}
        for row in union:
            mapping[str(row["instrument_id"])] = orjson.dumps(
                {
                    "symbol": row["instrument__symbol"],
                    "con_id": row["instrument__con_id"],
                    "exchange": row["instrument__exchange"],
                    "currency": row["instrument__currency"],
                    "since": row["since"].isoformat(),
                }
            )
        pipe = client.pipeline(transaction=True)
        pipe.delete(FEED_WANTED)
        pipe.hset(FEED_WANTED, mapping=mapping)  # type: ignore[arg-type]
        pipe.xadd(FEED_CONTROL, {"instruments": len(union)}, maxlen=CONTROL_MAXLEN, approximate=True)
        pipe.execute()
    return len(union)


def feed_publish_quietly() -> None:
    """`feed_publish` after a commit: a Redis outage must not fail the request that already committed."""
    try:
        feed_publish()
    except (redis.RedisError, redis.exceptions.LockError) as exc:
        log.warning("marketdata.feed_publish_failed", error=str(exc))
