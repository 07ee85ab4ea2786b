"""Opaque cursor pagination over (created_at, id), newest first.

A cursor encodes the sort key of the last row served, so pages stay stable while new rows
arrive (no offsets that skip or repeat rows). Clients treat it as opaque.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from django.db.models import Q, QuerySet

from apps.common.errors import ValidationFailed

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
T = TypeVar("T")
Serializer = Callable[[T], dict[str, Any]]


def encode_cursor(created_at: datetime, row_id: UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(created_at), UUID(row_id)
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError) as exc:
        raise ValidationFailed("Invalid cursor", fields={"cursor": ["not a cursor this API issued"]}) from exc


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed("Invalid limit", fields={"limit": [f"must be between 1 and {MAX_LIMIT}"]})
    return limit


def paginate(
    queryset: QuerySet[Any],
    *,
    limit: int,
    cursor: str | None,
    time_field: str = "created_at",
) -> tuple[list[Any], str | None]:
    """Return one page of `queryset` (newest first) and the cursor of the next page."""
    limit = check_limit(limit)
    queryset = queryset.order_by(f"-{time_field}", "-id")
    if cursor:
        after_time, after_id = decode_cursor(cursor)
        queryset = queryset.filter(
            Q(**{f"{time_field}__lt": after_time}) | Q(**{time_field: after_time, "id__lt": after_id})
        )
    rows = list(queryset[: limit + 1])
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(getattr(last, time_field), last.id)


def serialized_page(
    queryset: QuerySet[Any],
    *,
    limit: int,
    cursor: str | None,
    serialize: Serializer[Any],
    time_field: str = "created_at",
) -> dict[str, Any]:
    """The body of a `Page` response: one page of `queryset` (see `paginate`), each row serialised."""
    rows, next_cursor = paginate(queryset, limit=limit, cursor=cursor, time_field=time_field)
    return {"items": [serialize(row) for row in rows], "next": next_cursor}


def keyset_sql(cursor: str | None, *, time_column: str, id_column: str) -> tuple[str, list[Any]]:
    """The `AND …` condition (and its parameters) of the page after `cursor`, for hand-written SQL
    ordered by `time_column DESC, id_column DESC` like `paginate`; empty for the first page."""
    if not cursor:
        return "", []
    after_time, after_id = decode_cursor(cursor)
    return f" AND ({time_column}, {id_column}) < (%s, %s)", [after_time, after_id]


def page_of(rows: list[dict[str, Any]], *, limit: int, time_key: str = "created_at") -> tuple[list[Any], str | None]:
    """`paginate`'s result from rows fetched by hand-written SQL with `LIMIT limit + 1`."""
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last[time_key], last["id"])


def select_fields(items: Iterable[dict[str, Any]], fields: Sequence[str] | None) -> list[dict[str, Any]]:
    """Apply `?fields=a,b` (sparse fieldsets) to already-serialised items."""
    if not fields:
        return list(items)
    return [{name: item[name] for name in fields if name in item} for item in items]


def parse_fields(raw: str | None, allowed: Iterable[str]) -> list[str] | None:
    """Validate `?fields=`: every name must be a field of the resource."""
    if not raw:
        return None
    names = [name.strip() for name in raw.split(",") if name.strip()]
    allowed_set = set(allowed)
    unknown = [name for name in names if name not in allowed_set]
    if unknown:
        raise ValidationFailed(
            "Unknown fields requested", fields={"fields": [f"unknown field {name!r}" for name in unknown]}
        )
    return names
