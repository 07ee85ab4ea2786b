"""Server-Sent Events of a tenant's domain events, read from the tenant's Redis stream.

The relay writes every tenant event twice: on its topic stream (`ev.orders`, `ev.positions` …)
for consumer groups, and on `ev.tenant.<tenant id>` for this reader. Each SSE event's `id:` is
the entry id in the tenant stream, so `Last-Event-ID` resumes exactly after the last event the
client saw, without gaps (as long as the stream, trimmed at EVENTS_TENANT_STREAM_MAXLEN entries,
still holds it; otherwise a `gap` event says so and the client resynchronises over REST).

Stream tickets (`POST /events/stream-ticket`) let browsers authenticate, since `EventSource`
cannot send headers: a random token, stored hashed in Redis for 60 seconds, redeemed once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import redis
import redis.asyncio

from apps.events.streams import tenant_stream

TICKET_SECONDS = 60
TICKET_PREFIX = "oms:stream-ticket:"
ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


@dataclass(frozen=True, slots=True)
class Viewer:
    """Whose events a stream carries: the tenant, and the accounts the member may see (None: all)."""

    tenant_id: str
    account_ids: frozenset[str] | None = None
    kinds: frozenset[str] | None = None

    def sees(self, fields: Mapping[str, str], payload: Mapping[str, Any]) -> bool:
        if self.kinds is not None and fields.get("kind") not in self.kinds:
            return False
        account_id = payload.get("account_id")
        return self.account_ids is None or account_id is None or str(account_id) in self.account_ids


def _ticket_key(ticket: str) -> str:
    return TICKET_PREFIX + hashlib.sha256(ticket.encode()).hexdigest()


def ticket_issue(*, client: redis.Redis, viewer: Viewer) -> str:
    """Store a single-use ticket for `viewer`, valid TICKET_SECONDS; return it."""
    ticket = secrets.token_urlsafe(32)
    accounts = sorted(viewer.account_ids) if viewer.account_ids is not None else None
    body = {"tenant_id": viewer.tenant_id, "account_ids": accounts}
    client.set(_ticket_key(ticket), orjson.dumps(body), ex=TICKET_SECONDS)
    return ticket


def ticket_exists(*, client: redis.Redis, ticket: str) -> bool:
    """Whether a ticket is valid now, without using it up (the web process only redirects)."""
    return bool(client.exists(_ticket_key(ticket)))


async def ticket_redeem(*, client: redis.asyncio.Redis, ticket: str) -> Viewer | None:
    """Use a ticket up (GETDEL, so two clients cannot both redeem it); None when unknown or expired."""
    raw = await client.getdel(_ticket_key(ticket))
    if raw is None:
        return None
    body = orjson.loads(raw)
    accounts = body.get("account_ids")
    return Viewer(tenant_id=body["tenant_id"], account_ids=frozenset(accounts) if accounts is not None else None)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def format_event(entry_id: str, fields: Mapping[str, str], payload: Any) -> bytes:
    """One SSE event: `id:` the stream entry, `event:` the kind, `data:` the event as JSON (one line)."""
    data = {
        "id": fields.get("id"),
        "kind": fields.get("kind"),
        "aggregate_type": fields.get("aggregate_type"),
        "aggregate_id": fields.get("aggregate_id"),
        "created_at": fields.get("created_at"),
        "data": payload,
    }
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        entry_id.encode(),
        fields.get("kind", "message").encode(),
        orjson.dumps(data),
    )


async def _start(client: redis.asyncio.Redis, stream: str, last_event_id: str | None) -> tuple[str, bytes | None]:
    """Where to read from, and a `gap` event when the resume point was already trimmed away."""
    if last_event_id is None:
        newest = await client.xrevrange(stream, count=1)
        return (_text(newest[0][0]) if newest else "0-0"), None
    oldest = await client.xrange(stream, count=1)
    if oldest:
        first = _text(oldest[0][0])
        first_ms, first_seq = (int(part) for part in first.split("-"))
        last_ms, last_seq = (int(part) for part in last_event_id.split("-"))
        # The resume point was trimmed: events after it may be gone (we cannot tell how many).
        if (last_ms, last_seq) < (first_ms, first_seq):
            gap = orjson.dumps({"last_event_id": last_event_id, "first_available": first})
            return last_event_id, b"event: gap\ndata: %s\n\n" % gap
    return last_event_id, None


async def event_stream(
    *,
    client: redis.asyncio.Redis,
    viewer: Viewer,
    last_event_id: str | None,
    heartbeat_seconds: float,
    batch: int = 200,
) -> AsyncIterator[bytes]:
    """The SSE body: events after `last_event_id` (or from now), a comment heartbeat when idle."""
    stream = tenant_stream(viewer.tenant_id)
    cursor, gap = await _start(client, stream, last_event_id)
    yield b"retry: 2000\n\n"
    if gap is not None:
        yield gap
    quiet_since = time.monotonic()
    while True:
        wait_ms = max(1, int((quiet_since + heartbeat_seconds - time.monotonic()) * 1000))
        response = await client.xread({stream: cursor}, count=batch, block=wait_ms)
        chunk: list[bytes] = []
        for _, entries in response or []:
            for raw_id, raw_fields in entries:
                cursor = _text(raw_id)
                fields = {_text(key): _text(value) for key, value in raw_fields.items()}
                if viewer.kinds is not None and fields.get("kind") not in viewer.kinds:
                    continue  # not parsed at all
                payload = orjson.loads(fields.get("payload") or "null")
                if viewer.sees(fields, payload if isinstance(payload, dict) else {}):
                    chunk.append(format_event(cursor, fields, payload))
        if chunk:  # one write for what one read returned
            quiet_since = time.monotonic()
            yield b"".join(chunk)
        if time.monotonic() - quiet_since >= heartbeat_seconds:
            quiet_since = time.monotonic()
            yield b": heartbeat\n\n"
