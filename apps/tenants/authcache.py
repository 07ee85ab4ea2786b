"""A per-process cache of the member behind an access token, invalidated by the tenant's epoch.

Every authenticated request used to look its member up in PostgreSQL. The rate-limit round trip
to Redis now also returns the tenant's authentication epoch, a counter that every change to who
may act (sign-out, session revocation, membership or role change, tenant settings, admin edits)
increments after commit. A cached lookup is used only while the epoch it was read under is still
the tenant's epoch, so such changes take effect on the very next request in every process. The
short TTL bounds what a missed increment (Redis unreachable at that moment, or a row edited
behind the application's back) can leave stale.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from typing import Any
from uuid import UUID

import redis
import structlog
from django.db import transaction

from apps.common.redis import get_redis
from apps.tenants.ratelimit import auth_epoch_key

log = structlog.get_logger(__name__)

TTL_SECONDS = 5.0
MAX_ENTRIES = 20_000

_entries: dict[Hashable, tuple[str, float, Any]] = {}
_lock = threading.Lock()


def lookup(key: Hashable, epoch: str) -> Any | None:
    """The value cached for `key` under `epoch`, if it is still fresh."""
    entry = _entries.get(key)
    if entry is None:
        return None
    cached_epoch, deadline, value = entry
    if cached_epoch != epoch or deadline < time.monotonic():
        return None
    return value


def remember(key: Hashable, epoch: str, value: Any) -> None:
    with _lock:
        if len(_entries) >= MAX_ENTRIES:
            _entries.clear()  # crude but bounded; a full cache only costs one query per key
        _entries[key] = (epoch, time.monotonic() + TTL_SECONDS, value)


def clear() -> None:
    with _lock:
        _entries.clear()


def auth_epoch_bump(tenant_id: UUID | str) -> None:
    """Invalidate every cached authentication of the tenant, now and again after commit.

    Now, so nothing cached before the change is used once this transaction's effects can be seen;
    again after commit, because a request that read the database between the two (seeing the
    state before commit) may have cached it under the first new epoch.
    """

    def bump() -> None:
        try:
            get_redis().incr(auth_epoch_key(str(tenant_id)))
        except redis.RedisError as exc:
            log.warning("authcache.epoch_bump_failed", tenant_id=str(tenant_id), error=str(exc))

    bump()
    transaction.on_commit(bump)
