"""The outbox relay: publishes committed outbox rows to Redis Streams in `seq` order.

Only one relay works at a time (a PostgreSQL advisory lock held by its session); a second one
waits as a hot standby. Rows are read without row locks, published, then marked published in a
short transaction: a crash between the two publishes them again, which consumers tolerate.

Redis data loss (a restart without persistence, a failover to an empty replica) is detected by
a marker key the relay keeps in Redis: when it is gone, rows of the last EVENTS_REPLAY_HOURS
are marked unpublished and go out again, in order.
"""

from __future__ import annotations

import time
from datetime import timedelta

import orjson
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.audit.services import audit_seal
from apps.events.models import OutboxEvent
from apps.events.streams import tenant_stream

MARKER_KEY = "oms:relay:marker"
SEAL_EVERY = 1.0  # seconds
_last_seal = [0.0]
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


# The relay's scan (the partial index `outbox_unpublished`), as plain rows: the payload stays the
# JSON text PostgreSQL has, never decoded into Python and encoded again.
_UNPUBLISHED = """
    SELECT id, seq, kind, tenant_id, aggregate_type, aggregate_id, payload::text, trace_id, created_at, stream
    FROM events_outboxevent WHERE published_at IS NULL ORDER BY seq LIMIT %s
"""
# One statement in autocommit (no BEGIN/COMMIT round trips); `created_at` prunes the partitions.
_MARK_PUBLISHED = """
    UPDATE events_outboxevent SET published_at = %s
    WHERE id = ANY(%s) AND created_at >= %s AND published_at IS NULL
"""


def relay_batch(*, client: redis.Redis, batch_size: int = 500) -> int:
    """Publish up to `batch_size` unpublished rows, oldest first; return how many."""
    with connection.cursor() as cursor:
        cursor.execute(_UNPUBLISHED, [batch_size])
        rows = cursor.fetchall()
    if not rows:
        return 0
    pipe = client.pipeline(transaction=False)
    maxlen, tenant_maxlen = settings.EVENTS_STREAM_MAXLEN, settings.EVENTS_TENANT_STREAM_MAXLEN
    for id_, seq, kind, tenant_id, aggregate_type, aggregate_id, payload, trace_id, created_at, stream in rows:
        fields = {
            "id": str(id_),
            "seq": seq,
            "kind": kind,
            "tenant_id": str(tenant_id or ""),
            "aggregate_type": aggregate_type,
            "aggregate_id": aggregate_id,
            "payload": payload,
            "trace_id": trace_id,
            "created_at": created_at.isoformat(),
        }
        pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)
        if tenant_id is not None:
            # Every tenant event also goes on the tenant's own stream, which `/events/stream` reads.
            pipe.xadd(tenant_stream(tenant_id), fields, maxlen=tenant_maxlen, approximate=True)
    pipe.execute()
    with connection.cursor() as cursor:
        cursor.execute(_MARK_PUBLISHED, [timezone.now(), [row[0] for row in rows], min(row[8] for row in rows)])
    return len(rows)


def relay_pending(*, client: redis.Redis, batch_size: int = 500) -> int:
    """Publish everything unpublished (after a Redis data-loss check); return how many rows.

    Then seal the audit entries committed since the last wake-up into their chains: the writes
    that emit outbox rows are the ones that audit, and the relay's safety sweep catches the rest.
    """
    replay_if_redis_lost(client)
    total = 0
    while True:
        published = relay_batch(client=client, batch_size=batch_size)
        total += published
        if published < batch_size:
            break
    # At most every SEAL_EVERY seconds under load (a seal costs a few statements however many
    # entries it chains), at every wake-up when quiet: entries wait a second at most for their place.
    now = time.monotonic()
    if now - _last_seal[0] >= SEAL_EVERY or not total:
        audit_seal()
        _last_seal[0] = now
    return total
