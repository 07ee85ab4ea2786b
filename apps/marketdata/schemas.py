"""Ninja schemas of the market data API: subscriptions and the last quote."""

from __future__ import annotations

from uuid import UUID

from ninja import Field, Schema
from pydantic import ConfigDict

from apps.common.schemas import DecimalStr, PageQuery

LineStateName = str  # PENDING, ACTIVE, REFUSED


class SubscriptionIn(Schema):
    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(min_length=1, max_length=32)
    exchange: str | None = Field(default=None, max_length=16)
    currency: str | None = Field(default=None, min_length=3, max_length=3)


class LineOut(Schema):
    """The instrument's IB line: PENDING (not held yet), ACTIVE, or REFUSED with the reason."""

    state: LineStateName
    reason: str | None
    updated_at: str | None


class SubscriptionOut(Schema):
    id: UUID
    instrument_id: UUID
    symbol: str
    exchange: str
    currency: str
    con_id: int | None
    created_by: UUID | None
    created_at: str
    line: LineOut


class SubscriptionQuery(PageQuery):
    symbol: str | None = Field(default=None, max_length=32)


class SymbolQuery(Schema):
    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(min_length=1, max_length=32)
    exchange: str | None = Field(default=None, max_length=16)
    currency: str | None = Field(default=None, min_length=3, max_length=3)


class ListingQuery(Schema):
    model_config = ConfigDict(extra="forbid")

    exchange: str | None = Field(default=None, max_length=16)
    currency: str | None = Field(default=None, min_length=3, max_length=3)


class QuoteOut(Schema):
    symbol: str
    instrument_id: UUID
    bid: DecimalStr | None
    ask: DecimalStr | None
    last: DecimalStr
    bid_size: DecimalStr | None
    ask_size: DecimalStr | None
    last_size: DecimalStr | None
    at: str | None
    source: str
