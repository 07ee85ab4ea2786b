"""Reads of the streams: the broker event log tail (spec 000's `/ib/events/tail`)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
import redis

from apps.events.streams import BROKER_EVENTS, decode_entry

SCAN_CHUNK = 500
SCAN_LIMIT = 20_000  # entries looked at per request, so a rare filter cannot scan the whole stream


@dataclass(frozen=True, slots=True)
class TailFilters:
    msg_id: str | None = None
    order_index: int | None = None
    kind: str | None = None


def _matches(fields: dict[str, str], tenant_id: UUID, filters: TailFilters) -> bool:
    if fields.get("tenant_id") != str(tenant_id):
        return False
    if filters.msg_id is not None and fields.get("msg_id") != filters.msg_id:
        return False
    if filters.order_index is not None and fields.get("order_index") != str(filters.order_index):
        return False
    return filters.kind is None or fields.get("kind") == filters.kind


def _item(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    data: Any = fields.get("data")
    if data is not None:
        with contextlib.suppress(orjson.JSONDecodeError):
            data = orjson.loads(data)
    index = fields.get("order_index")
    return {
        "id": entry_id,
        "kind": fields.get("kind", ""),
        "msg_id": fields.get("msg_id") or None,
        "order_index": int(index) if index not in (None, "") else None,
        "order_id": fields.get("order_id") or None,
        "at": fields.get("at") or None,
        "data": data,
    }


def broker_event_tail(
    *, tenant_id: UUID, client: redis.Redis, limit: int, filters: TailFilters
) -> list[dict[str, Any]]:
    """The tenant's most recent broker events matching the filters, newest first."""
    found: list[dict[str, Any]] = []
    upper, scanned = "+", 0
    while len(found) < limit and scanned < SCAN_LIMIT:
        chunk = client.xrevrange(BROKER_EVENTS, max=upper, min="-", count=SCAN_CHUNK)
        if not chunk:
            break
        for raw_id, raw_fields in chunk:
            entry_id, fields = decode_entry(raw_id, raw_fields)
            if _matches(fields, tenant_id, filters):
                found.append(_item(entry_id, fields))
                if len(found) == limit:
                    break
        scanned += len(chunk)
        last_id = decode_entry(chunk[-1][0], {})[0]
        upper = f"({last_id}"
        if len(chunk) < SCAN_CHUNK:
            break
    return found
