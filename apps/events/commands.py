"""Signed command envelopes (spec 000: `oms.submit`, `oms.cancel`, `oms.modify`) on Redis Streams.

The OMS signs; a broker connector (the IB gateway, the paper broker) verifies before acting. The
signature is HMAC-SHA256 over the canonical JSON of the envelope without its signature, with a
key id (for rotation), a timestamp (stale envelopes are refused) and a nonce (replays are refused).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from typing import Any

import orjson
import redis
from django.conf import settings

from apps.common.redis import get_redis

KEY_ID = "k1"
NONCE_TTL_SECONDS = 600
COMMAND_KINDS = frozenset({"oms.submit", "oms.cancel", "oms.modify"})


class EnvelopeRejected(Exception):
    """A command that must not be acted on; `reason` is recorded by the consumer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def command_stream(account_id: Any) -> str:
    """The command stream of one broker account."""
    return f"cmd.{account_id}"


def _canonical(body: Mapping[str, Any]) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def _signature(body: Mapping[str, Any]) -> str:
    return hmac.new(settings.COMMAND_SIGNING_KEY.encode(), _canonical(body), hashlib.sha256).hexdigest()


def envelope_sign(*, kind: str, payload: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
    """Return a signed envelope of `kind` carrying `payload`."""
    if kind not in COMMAND_KINDS:
        raise ValueError(f"unknown command kind {kind!r}")
    body = {
        "kind": kind,
        "key_id": KEY_ID,
        "ts": int(now if now is not None else time.time()),
        "nonce": secrets.token_hex(16),
        "payload": dict(payload),
    }
    return {**body, "sig": _signature(body)}


def envelope_verify(envelope: Mapping[str, Any], *, client: redis.Redis | None = None) -> dict[str, Any]:
    """Return the payload of a genuine, fresh, first-seen envelope; raise EnvelopeRejected otherwise."""
    body = {name: value for name, value in envelope.items() if name != "sig"}
    if envelope.get("key_id") != KEY_ID:
        raise EnvelopeRejected(f"unknown key id {envelope.get('key_id')!r}")
    if not hmac.compare_digest(str(envelope.get("sig", "")), _signature(body)):
        raise EnvelopeRejected("bad signature")
    age = time.time() - float(envelope.get("ts", 0))
    if abs(age) > settings.COMMAND_MAX_AGE_SECONDS:
        raise EnvelopeRejected(f"stale timestamp ({age:.0f} s old)")
    client = client or get_redis()
    # SET NX makes the nonce check and its recording one atomic step.
    if not client.set(f"oms:cmd-nonce:{envelope.get('nonce')}", 1, nx=True, ex=NONCE_TTL_SECONDS):
        raise EnvelopeRejected("replayed nonce")
    return dict(envelope.get("payload") or {})


def command_publish(*, account_id: Any, kind: str, payload: Mapping[str, Any]) -> str:
    """Sign and append a command to the account's stream; return the stream entry id."""
    envelope = envelope_sign(kind=kind, payload=payload)
    entry_id = get_redis().xadd(
        command_stream(account_id), {"envelope": _canonical(envelope)}, maxlen=settings.EVENTS_STREAM_MAXLEN
    )
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
