"""Schema building blocks shared by every app's API: decimals as strings, the error envelope."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Generic, TypeVar

from ninja import Schema
from pydantic import AfterValidator, BeforeValidator, ConfigDict, PlainSerializer, WithJsonSchema


def _parse_decimal(value: Any) -> Decimal:
    # API.md: decimals come as strings or integers; floats (binary fractions) and the rest are refused.
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ValueError('must be a decimal string such as "101.25" or an integer')
    try:
        parsed = Decimal(value) if not isinstance(value, str) else Decimal(value.strip())
    except InvalidOperation as exc:
        raise ValueError(f"{value!r} is not a decimal number") from exc
    if not parsed.is_finite():
        raise ValueError("must be a finite number")
    return parsed


DecimalStr = Annotated[
    Decimal,
    BeforeValidator(_parse_decimal),
    PlainSerializer(lambda value: format(value, "f"), return_type=str),
    WithJsonSchema({"type": "string", "format": "decimal", "pattern": r"^-?\d+(\.\d+)?$", "example": "101.25"}),
]


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must include a time zone (Z or ±hh:mm)")
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ValueError("is out of range") from exc


# Aware datetimes, normalised to UTC before they reach a query (PostgreSQL refuses offsets past ±15:59).
UtcDateTime = Annotated[datetime, AfterValidator(_to_utc)]


class ErrorOut(Schema):
    """The error envelope of API.md."""

    trace_id: str
    code: str
    message: str
    details: dict[str, Any] = {}
    hint: str | None = None


ItemT = TypeVar("ItemT")


class Page(Schema, Generic[ItemT]):
    """A page of a cursor-paginated list: pass `next` back as `?cursor=` for the next page."""

    items: list[ItemT]
    next: str | None


class PageQuery(Schema):
    """The query of a paginated list: `limit` and `cursor` (checked by `paginate`); unknown parameters are refused."""

    model_config = ConfigDict(extra="forbid")

    limit: int = 50
    cursor: str | None = None
