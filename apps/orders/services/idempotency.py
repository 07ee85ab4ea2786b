"""`Idempotency-Key`: one outcome per key and tenant for 24 hours, replayed to every retry.

`idempotency_claim` runs first inside the write's transaction and inserts the key. A concurrent
request with the same key blocks on the unique index until the first transaction ends: if it
committed, the insert fails and the stored response is replayed; if it rolled back (the request
was refused), the key is free and the second request does the work itself. No check-then-create.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import IntegrityError, transaction
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
    """Claim `key` for this request, or return the replay of the request that already holds it."""
    now = timezone.now()
    # An expired key is free again; deleting it first lets the insert below take it.
    IdempotencyRecord.objects.filter(tenant=tenant, key=key, expires_at__lte=now).delete()
    try:
        with transaction.atomic():
            return IdempotencyRecord.objects.create(
                tenant=tenant,
                key=key,
                fingerprint=fingerprint,
                created_at=now,
                expires_at=now + timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS),
            )
    except IntegrityError:
        existing = IdempotencyRecord.objects.get(tenant=tenant, key=key)
    if existing.fingerprint != fingerprint:
        raise IdempotentReplay(
            "Idempotency-Key was already used with a different request",
            details={"idempotency_key": key, "first_used_at": existing.created_at.isoformat()},
        )
    return Replay(status=existing.status_code, body=existing.response)


def idempotency_store(*, record: IdempotencyRecord, status: int, body: Any) -> None:
    """Keep the response of the request that claimed the key (same transaction as its work)."""
    record.status_code = status
    record.response = body
    record.save(update_fields=["status_code", "response"])


def idempotency_purge() -> int:
    """Delete expired keys; return how many."""
    deleted, _ = IdempotencyRecord.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted
