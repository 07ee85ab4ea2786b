"""The outbox relay: publishes committed outbox rows to Redis Streams in `seq` order.

Only one relay works at a time (a PostgreSQL advisory lock held by its session); a second one
waits as a hot standby. Rows are read without row locks, published, then marked published in a
short transaction: a crash between the two publishes them again, which consumers tolerate.

Redis data loss (a restart without persistence, a failover to an empty replica) is detected by
a marker key the relay keeps in Redis: when it is gone, rows of the last EVENTS_REPLAY_HOURS
are marked unpublished and go out again, in order.
"""

from __future__ import annotations

from datetime import timedelta

import orjson
import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.events.models import OutboxEvent
from apps.events.streams import tenant_stream

MARKER_KEY = "oms:relay:marker"
ADVISORY_LOCK_KEY = 0x0B5E_7E1A  # "outbox relay"


def try_lead() -> bool:
    """Take the relay's advisory lock for this session; False when another relay holds it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
        return bool(cursor.fetchone()[0])


def replay_if_redis_lost(client: redis.Redis) -> int:
    """If Redis lost the marker (and so, presumably, the streams), publish recent rows again."""
    if client.exists(MARKER_KEY):
        return 0
    since = timezone.now() - timedelta(hours=settings.EVENTS_REPLAY_HOURS)
    replayed = OutboxEvent.objects.filter(created_at__gte=since, published_at__isnull=False).update(published_at=None)
    client.set(MARKER_KEY, timezone.now().isoformat())
    return replayed


def entry_fields(event: OutboxEvent) -> dict[str, str | int]:
    return {
        "id": str(event.id),
        "seq": event.seq,
        "kind": event.kind,
        "tenant_id": str(event.tenant_id or ""),
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "payload": orjson.dumps(event.payload),
        "trace_id": event.trace_id,
        "created_at": event.created_at.isoformat(),
    }


def relay_batch(*, client: redis.Redis, batch_size: int = 500) -> int:
    """Publish up to `batch_size` unpublished rows, oldest first; return how many."""
    events = list(OutboxEvent.objects.filter(published_at__isnull=True).order_by("seq")[:batch_size])
    if not events:
        return 0
    pipe = client.pipeline(transaction=False)
    for event in events:
        fields = entry_fields(event)
        pipe.xadd(event.stream, fields, maxlen=settings.EVENTS_STREAM_MAXLEN, approximate=True)
        if event.tenant_id is not None:
            # Every tenant event also goes on the tenant's own stream, which `/events/stream` reads.
            stream = tenant_stream(event.tenant_id)
            pipe.xadd(stream, fields, maxlen=settings.EVENTS_TENANT_STREAM_MAXLEN, approximate=True)
    pipe.execute()
    with transaction.atomic():
        OutboxEvent.objects.filter(id__in=[event.id for event in events]).update(published_at=timezone.now())
    return len(events)


def relay_pending(*, client: redis.Redis, batch_size: int = 500) -> int:
    """Publish everything unpublished (after a Redis data-loss check); return how many rows."""
    replay_if_redis_lost(client)
    total = 0
    while True:
        published = relay_batch(client=client, batch_size=batch_size)
        total += published
        if published < batch_size:
            return total
