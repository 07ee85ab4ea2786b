"""Ninja schemas of orders, their events and executions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from ninja import Field, Schema
from pydantic import AfterValidator, ConfigDict, field_validator

from apps.common.schemas import DecimalStr

SideLit = Literal["BUY", "SELL"]
OrderTypeLit = Literal["MKT", "LMT", "STP", "STP_LMT", "TRAIL", "MOC", "LOC"]
TifLit = Literal["DAY", "GTC", "IOC", "FOK", "GTD"]
OrderClassLit = Literal["SIMPLE", "BRACKET", "OCO", "OTO"]
StateLit = Literal[
    "NEW", "ROUTED", "PARTIALLY_FILLED", "PENDING_CANCEL", "PENDING_MODIFY", "FILLED", "CANCELED", "REJECTED", "EXPIRED"
]


SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._/-]*$"


def _no_nul(value: Any, path: str = "metadata") -> None:
    # PostgreSQL text and jsonb cannot hold NUL characters: refuse them as bad input, not a 500.
    if isinstance(value, str) and "\x00" in value:
        raise ValueError(f"{path} must not contain NUL characters")
    if isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key, path)
            _no_nul(item, path)
    elif isinstance(value, list):
        for item in value:
            _no_nul(item, path)


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _utc(value: datetime) -> datetime:
    # Naive times are read as UTC; anything the database cannot store is a 422, not a 500.
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("time is out of range") from exc
    if not EARLIEST <= value < LATEST:
        raise ValueError("time must be between 1970 and 9000 (UTC)")
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class Strict(Schema):
    model_config = ConfigDict(extra="forbid")


class TakeProfitIn(Strict):
    limit_price: DecimalStr | None = None
    stop_price: DecimalStr | None = None


class StopLossIn(Strict):
    stop_price: DecimalStr | None = None
    limit_price: DecimalStr | None = None


class OrderIn(Strict):
    account_id: UUID
    symbol: str = Field(min_length=1, max_length=32, pattern=SYMBOL_PATTERN)
    currency: str | None = Field(default=None, pattern=r"^[A-Za-z]{3}$", description="only for symbols listed twice")
    side: SideLit
    quantity: DecimalStr
    order_type: OrderTypeLit
    limit_price: DecimalStr | None = None
    stop_price: DecimalStr | None = None
    trail_amount: DecimalStr | None = None
    trail_percent: DecimalStr | None = None
    time_in_force: TifLit = "DAY"
    good_till: UtcDatetime | None = None
    outside_rth: bool = False
    client_order_id: str | None = Field(default=None, min_length=1, max_length=48, pattern=r"^[A-Za-z0-9_.:-]+$")
    strategy_id: UUID | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    order_class: OrderClassLit = "SIMPLE"
    take_profit: TakeProfitIn | None = None
    stop_loss: StopLossIn | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        _no_nul(value)
        if len(orjson.dumps(value)) > 16_384:
            raise ValueError("metadata must be at most 16 KiB of JSON")
        return value


class OrderPatch(Strict):
    quantity: DecimalStr | None = None
    limit_price: DecimalStr | None = None
    stop_price: DecimalStr | None = None
    trail_amount: DecimalStr | None = None
    trail_percent: DecimalStr | None = None


class BatchIn(Strict):
    orders: list[dict[str, Any]] = Field(min_length=1, max_length=100)


class BatchCancelIn(Strict):
    ids: list[UUID] = Field(min_length=1, max_length=100)


class OrderOut(Schema):
    id: UUID
    client_order_id: str
    broker_order_id: str | None
    account_id: UUID
    symbol: str
    side: str
    quantity: DecimalStr
    filled_quantity: DecimalStr
    remaining_quantity: DecimalStr
    avg_fill_price: DecimalStr | None
    order_type: str
    limit_price: DecimalStr | None
    stop_price: DecimalStr | None
    trail_amount: DecimalStr | None
    trail_percent: DecimalStr | None
    time_in_force: str
    good_till: datetime | None
    outside_rth: bool
    state: str
    reject_reason: str | None
    strategy_id: UUID | None
    metadata: dict[str, Any]
    version: int
    order_class: str
    parent_id: UUID | None
    oca_group: str | None
    created_at: datetime
    updated_at: datetime
    routed_at: datetime | None
    closed_at: datetime | None
    legs: list[OrderOut] | None = None


class ItemError(Schema):
    code: str
    message: str
    details: dict[str, Any]
    hint: str | None


class BatchResult(Schema):
    index: int
    status: int
    order: OrderOut | None
    error: ItemError | None


class BatchOut(Schema):
    results: list[BatchResult]


class CheckOut(Schema):
    gate: str
    passed: bool
    detail: str
    # Risk and compliance gates also say which limit / rule (and version) decided, on what inputs.
    code: str | None = None
    limit_id: str | None = None
    limit_version: int | None = None
    value: str | None = None
    limit: str | None = None
    inputs: dict[str, Any] = {}
    projected: dict[str, Any] = {}


class PreviewOut(Schema):
    accepted: bool
    checks: list[CheckOut]
    projected: dict[str, Any]


class OrderEventOut(Schema):
    id: UUID
    order_id: UUID
    seq: int
    kind: str
    from_state: str | None
    to_state: str
    detail: dict[str, Any]
    actor: str
    created_at: datetime


class ExecutionOut(Schema):
    id: UUID
    order_id: UUID
    account_id: UUID
    symbol: str
    side: str
    broker_exec_id: str
    quantity: DecimalStr
    price: DecimalStr
    commission: DecimalStr
    currency: str
    executed_at: datetime


class OrderListQuery(Strict):
    limit: int = 50
    cursor: str | None = None
    fields: str | None = None
    state: StateLit | None = None
    symbol: str | None = Field(default=None, max_length=32, pattern=SYMBOL_PATTERN)
    account_id: UUID | None = None
    side: SideLit | None = None
    strategy_id: UUID | None = None
    client_order_id: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    created_after: UtcDatetime | None = None
    created_before: UtcDatetime | None = None


class PageQuery(Strict):
    limit: int = 50
    cursor: str | None = None
