"""Signed job envelopes (spec 000): the API signs what it enqueues, the worker verifies it.

An envelope is plain JSON, so it travels through the Celery broker unchanged::

    {"v": 1, "kind": "allocator.run", "issued_at": 1732250000, "body": {...},
     "signature": "sha256=<hex HMAC-SHA256 of the canonical JSON of v, kind, issued_at, body>"}

Canonical JSON has sorted keys and no spaces, so both sides hash the same bytes whatever order
the broker's serializer left the keys in. Anyone who can write to the broker but does not hold
the key cannot make a worker run (or spend hours on) a job the API never accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

VERSION = 1
SCHEME = "sha256="


class EnvelopeRejected(Exception):
    """The envelope is malformed, of another kind, or its signature does not verify."""


def canonical_json(value: Any) -> bytes:
    """The one byte form of a JSON value that both the signer and the verifier hash."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _signature(key: bytes, signed: Mapping[str, Any]) -> str:
    return SCHEME + hmac.new(key, canonical_json(signed), hashlib.sha256).hexdigest()


def envelope_sign(*, kind: str, body: Mapping[str, Any], key: bytes, issued_at: int) -> dict[str, Any]:
    """Wrap `body` in an envelope signed with `key`."""
    signed = {"v": VERSION, "kind": kind, "issued_at": issued_at, "body": dict(body)}
    return {**signed, "signature": _signature(key, signed)}


def envelope_verify(envelope: Any, *, kind: str, key: bytes) -> dict[str, Any]:
    """Return the body of a genuine envelope of `kind`; raise `EnvelopeRejected` otherwise."""
    if not isinstance(envelope, Mapping):
        raise EnvelopeRejected("the envelope is not an object")
    missing = sorted({"v", "kind", "issued_at", "body", "signature"} - set(envelope))
    if missing:
        raise EnvelopeRejected(f"the envelope lacks {', '.join(missing)}")
    signed = {name: envelope[name] for name in ("v", "kind", "issued_at", "body")}
    signature = envelope["signature"]
    # Compare before looking at anything else, in constant time, so a forgery learns nothing.
    if not isinstance(signature, str) or not hmac.compare_digest(signature, _signature(key, signed)):
        raise EnvelopeRejected("the signature does not match")
    if signed["v"] != VERSION:
        raise EnvelopeRejected(f"envelope version {signed['v']!r} is not supported")
    if signed["kind"] != kind:
        raise EnvelopeRejected(f"expected an envelope of kind {kind!r}, got {signed['kind']!r}")
    body = signed["body"]
    if not isinstance(body, Mapping):
        raise EnvelopeRejected("the envelope's body is not an object")
    return dict(body)
