"""Ninja schemas of positions and P&L."""

from __future__ import annotations

from datetime import date
from uuid import UUID

from ninja import Field, Schema
from pydantic import ConfigDict


class Strict(Schema):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PositionListQuery(Strict):
    account_id: UUID | None = None
    symbol: str | None = Field(default=None, max_length=32)
    include_flat: bool = False
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=200)


class PositionQuery(Strict):
    account_id: UUID | None = None
    currency: str | None = Field(default=None, min_length=3, max_length=3)


class PositionOut(Schema):
    id: UUID
    account_id: UUID
    instrument_id: UUID
    symbol: str
    currency: str
    quantity: str
    avg_cost: str
    market_price: str | None
    market_value: str | None
    unrealized_pnl: str | None
    realized_pnl: str
    price_at: str | None
    updated_at: str


class PnlTodayQuery(Strict):
    account_id: UUID | None = None


class PnlHistoryQuery(Strict):
    start: date | None = Field(default=None, alias="from", description="first day (UTC), default: 30 days before `to`")
    end: date | None = Field(default=None, alias="to", description="last day (UTC), default: today")
    account_id: UUID | None = None


class AccountPnlOut(Schema):
    account_id: UUID
    currency: str
    realized_pnl: str
    unrealized_pnl: str
    total_pnl: str
    open_positions: int
    unpriced_positions: int


class SnapshotOut(AccountPnlOut):
    date: str
    realized_total: str


class TotalOut(Schema):
    currency: str
    realized_pnl: str
    unrealized_pnl: str
    total_pnl: str


class PnlTodayOut(Schema):
    date: str
    accounts: list[AccountPnlOut]
    total: list[TotalOut]


class PnlDayOut(Schema):
    date: str
    accounts: list[SnapshotOut]
    total: list[TotalOut]


class PnlHistoryOut(Schema):
    items: list[PnlDayOut]
    next: str | None = None
