"""Ninja schemas of broker accounts and instruments."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from ninja import Field, Schema
from pydantic import ConfigDict

from apps.common.schemas import DecimalStr


class ConnectionIn(Schema):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.:_\[\]-]+$")
    port: int = Field(ge=1, le=65535)
    client_id: int = Field(ge=0, le=2**31 - 1)


class BrokerAccountIn(Schema):
    model_config = ConfigDict(extra="forbid")

    broker: Literal["IB", "PAPER"]
    account_code: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
    mode: Literal["PAPER", "LIVE"]
    base_currency: str = Field(default="USD", pattern=r"^[A-Za-z]{3}$")
    connection: ConnectionIn | None = None
    # Write-only: stored encrypted, never returned.
    credentials: dict[str, str] | None = Field(default=None, max_length=20)


class HaltIn(Schema):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=200)


class ConnectionOut(Schema):
    host: str
    port: int | None
    client_id: int | None


class BrokerAccountOut(Schema):
    id: UUID
    broker: str
    account_code: str
    mode: str
    base_currency: str
    connection: ConnectionOut | None
    status: str
    status_reason: str
    connect_requested: bool
    halted: bool  # by an operator (`/halt`); HALTED without it is the gateway's circuit breaker
    last_heartbeat_at: datetime | None
    has_credentials: bool
    created_at: datetime
    updated_at: datetime


class GrantIn(Schema):
    model_config = ConfigDict(extra="forbid")

    user_id: UUID


class GrantOut(Schema):
    user_id: UUID
    email: str


class AccountListQuery(Schema):
    model_config = ConfigDict(extra="forbid")

    limit: int = 50
    cursor: str | None = None
    broker: Literal["IB", "PAPER"] | None = None
    status: Literal["CONNECTED", "DISCONNECTED", "RECONNECTING", "HALTED"] | None = None


class InstrumentQuery(Schema):
    model_config = ConfigDict(extra="forbid")

    limit: int = 50
    cursor: str | None = None
    symbol: str | None = Field(default=None, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._/-]*$")
    asset_class: Literal["STK", "ETF", "FX", "FUT", "OPT"] | None = None
    fields: str | None = None


class InstrumentOut(Schema):
    id: UUID
    symbol: str
    exchange: str
    currency: str
    asset_class: str
    description: str
    tick_size: DecimalStr
    lot_size: DecimalStr
    multiplier: DecimalStr
    broker_ref: str | None
    con_id: int | None
