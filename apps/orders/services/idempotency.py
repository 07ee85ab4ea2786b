"""`Idempotency-Key`: one outcome per key and tenant for 24 hours, replayed to every retry.

`idempotency_claim` runs first inside the write's transaction and inserts the key. A concurrent
request with the same key blocks on the unique index until the first transaction ends: if it
committed, the insert does nothing and the stored response is replayed; if it rolled back (the
request was refused), the key is free and the second request does the work itself. An expired
key is taken over by the same INSERT. No check-then-create.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.common.errors import IdempotentReplay
from apps.orders.models import IdempotencyRecord
from apps.tenants.models import Tenant


@dataclass(frozen=True, slots=True)
class Replay:
    """The stored outcome of an earlier request with the same key and payload."""

    status: int
    body: Any


def request_fingerprint(*, operation: str, payload: Any) -> str:
    """A digest of the operation and its parsed payload (key order and whitespace do not matter)."""
    canonical = orjson.dumps({"operation": operation, "payload": payload}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def idempotency_claim(*, tenant: Tenant, key: str, fingerprint: str) -> IdempotencyRecord | Replay:
    """Claim `key` for this request, or return the replay of the request that already holds it.

    One statement: an INSERT that takes over an expired record of the key (ON CONFLICT ... WHERE
    expired) and otherwise waits for, then yields to, the transaction that holds the key."""
    now = timezone.now()
    record = IdempotencyRecord(
        tenant=tenant,
        key=key,
        fingerprint=fingerprint,
        created_at=now,
        expires_at=now + timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS),
    )
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM, [record.id, tenant.id, key, fingerprint, record.created_at, record.expires_at])
        claimed = cursor.fetchone()
    if claimed is not None:
        record.id = claimed[0]  # an expired record taken over keeps its id
        record._state.adding, record._state.db = False, connection.alias
        return record
    existing = IdempotencyRecord.objects.get(tenant=tenant, key=key)
    if existing.fingerprint != fingerprint:
        raise IdempotentReplay(
            "Idempotency-Key was already used with a different request",
            details={"idempotency_key": key, "first_used_at": existing.created_at.isoformat()},
        )
    return Replay(status=existing.status_code, body=existing.response)


_CLAIM = """
    INSERT INTO orders_idempotencyrecord
        (id, tenant_id, key, fingerprint, status_code, response, created_at, expires_at)
    VALUES (%s, %s, %s, %s, 0, '{}'::jsonb, %s, %s)
    ON CONFLICT (tenant_id, key) DO UPDATE
        SET fingerprint = EXCLUDED.fingerprint, status_code = 0, response = '{}'::jsonb,
            created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
        WHERE orders_idempotencyrecord.expires_at <= EXCLUDED.created_at
    RETURNING id
"""


def idempotency_store(*, record: IdempotencyRecord, status: int, body: Any) -> None:
    """Keep the response of the request that claimed the key (same transaction as its work)."""
    record.status_code = status
    record.response = body
    record.save(update_fields=["status_code", "response"])


def idempotency_store_sql(*, record: IdempotencyRecord, status: int, body: Any) -> tuple[str, list[object]]:
    """`idempotency_store` as a statement with its parameters, for the caller to run with its
    other writes (placing sends it in the one statement of its inserts)."""
    record.status_code = status
    record.response = body
    response = IdempotencyRecord._meta.get_field("response").get_db_prep_save(body, connection)
    table = IdempotencyRecord._meta.db_table
    return f"UPDATE {table} SET status_code = %s, response = %s WHERE id = %s", [status, response, record.id]  # noqa: S608


def idempotency_purge() -> int:
    """Delete expired keys; return how many."""
    deleted, _ = IdempotencyRecord.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted
