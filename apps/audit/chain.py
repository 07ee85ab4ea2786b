"""The audit hash chain, as pure functions.

Each entry's hash is SHA-256 over its canonical JSON content and the previous entry's hash, so
changing, inserting or removing any entry breaks every link after it. Entries are walked by their
`position` in the chain (1, 2, 3, ... per tenant); `seq`, their insertion number, is content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

GENESIS = "0" * 64

HASHED_FIELDS = (
    "seq",
    "tenant_id",
    "created_at",
    "actor_kind",
    "actor_label",
    "actor_user_id",
    "actor_api_key_id",
    "action",
    "resource_type",
    "resource_id",
    "before",
    "after",
    "ip",
    "user_agent",
    "trace_id",
)


def jsonable(value: Any) -> Any:
    """Turn a value into plain JSON types exactly as it will be stored, so hashes round-trip."""
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [jsonable(item) for item in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return jsonable(value.value)
    return value


def entry_hash(content: Mapping[str, Any], prev_hash: str) -> str:
    """Hash one entry's content (the HASHED_FIELDS) chained to `prev_hash`."""
    canonical = json.dumps(
        {name: jsonable(content.get(name)) for name in HASHED_FIELDS},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(f"{prev_hash}|{canonical}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    valid: bool
    entries: int
    first_bad_id: str | None = None
    reason: str | None = None


def verify_chain(
    entries: Iterable[Mapping[str, Any]],
    *,
    anchor_seq: int,
    anchor_hash: str,
    head_seq: int,
    head_hash: str,
) -> ChainVerdict:
    """Walk entries in `position` order from the anchor and check every link up to the head
    (`anchor_seq` and `head_seq` are chain positions)."""
    expected_seq, prev_hash, count = anchor_seq + 1, anchor_hash, 0
    for entry in entries:
        count += 1
        entry_id = str(entry["id"])
        if entry["position"] != expected_seq:
            reason = f"expected position {expected_seq}, found {entry['position']} (an entry is missing)"
            return ChainVerdict(False, count, entry_id, reason)
        if entry["prev_hash"] != prev_hash:
            return ChainVerdict(False, count, entry_id, "prev_hash does not match the previous entry")
        if entry_hash(entry, prev_hash) != entry["hash"]:
            return ChainVerdict(False, count, entry_id, "content does not match its hash (edited)")
        prev_hash, expected_seq = entry["hash"], expected_seq + 1
    if expected_seq - 1 != head_seq or prev_hash != head_hash:
        return ChainVerdict(
            False, count, None, f"chain ends at position {expected_seq - 1} but its head is at {head_seq}"
        )
    return ChainVerdict(True, count)
