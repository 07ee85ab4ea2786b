"""Ninja schemas of the risk API: limits, overrides, kill switches, breakers, account settings, status."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from ninja import Field, Schema
from pydantic import ConfigDict

from apps.common.schemas import DecimalStr, PageQuery, UtcDateTime

LimitKindName = Literal[
    "MAX_ORDER_QTY",
    "MAX_ORDER_NOTIONAL",
    "MAX_POSITION_QTY",
    "MAX_GROSS_EXPOSURE",
    "MAX_OPEN_ORDERS",
    "ORDER_RATE",
    "DAILY_LOSS",
    "TRAILING_DRAWDOWN",
    "CONCENTRATION",
    "PRICE_BAND",
]
LimitScopeName = Literal["TENANT", "ACCOUNT", "INSTRUMENT", "STRATEGY"]
BreakerKindName = Literal["REJECT_STORM", "DAILY_LOSS", "ACK_LATENCY", "STALE_MARKET_DATA", "RECONCILIATION_BREAK"]


class LimitIn(Schema):
    model_config = ConfigDict(extra="forbid")

    kind: LimitKindName
    scope: LimitScopeName
    scope_id: str | None = Field(default=None, max_length=64)
    value: DecimalStr
    period: str | None = Field(default=None, max_length=16)
    enabled: bool = True


class LimitPatch(Schema):
    model_config = ConfigDict(extra="forbid")

    value: DecimalStr | None = None
    period: str | None = Field(default=None, max_length=16)
    enabled: bool | None = None


class LimitOut(Schema):
    id: UUID
    kind: str
    scope: str
    scope_id: str | None
    value: str
    period: str | None
    enabled: bool
    version: int
    created_at: str
    updated_at: str


class LimitQuery(PageQuery):
    kind: LimitKindName | None = None
    scope: LimitScopeName | None = None


class OverrideIn(Schema):
    model_config = ConfigDict(extra="forbid")

    limit_id: UUID
    value: DecimalStr
    reason: str = Field(min_length=1, max_length=500)
    valid_until: UtcDateTime
    valid_from: UtcDateTime | None = None
    account_id: UUID | None = None


class OverrideOut(Schema):
    id: UUID
    limit_id: UUID
    account_id: UUID | None
    value: str
    reason: str
    valid_from: str
    valid_until: str
    revoked_at: str | None
    active: bool
    created_by: str
    created_at: str


class ActiveQuery(PageQuery):
    active: bool | None = None


class KillSwitchIn(Schema):
    model_config = ConfigDict(extra="forbid")

    scope: Literal["TENANT", "ACCOUNT", "STRATEGY"]
    scope_id: str | None = Field(default=None, max_length=64)
    reason: str = Field(min_length=1, max_length=500)


class KillSwitchOut(Schema):
    id: UUID
    scope: str
    scope_id: str | None
    reason: str
    active: bool
    engaged_at: str
    engaged_by: str
    released_at: str | None
    released_by: str | None
    cancelled_orders: int


class BreakerIn(Schema):
    model_config = ConfigDict(extra="forbid")

    kind: BreakerKindName
    account_id: UUID | None = None
    reason: str = Field(min_length=1, max_length=400)


class BreakerOut(Schema):
    id: UUID
    kind: str
    account_id: UUID | None
    state: str
    action: str
    reason: str
    metrics: dict[str, Any]
    manual: bool
    tripped_at: str | None
    reset_at: str | None
    trips: int
    updated_at: str


class BreakerQuery(PageQuery):
    state: Literal["OPEN", "CLOSED"] | None = None


class AccountRiskPatch(Schema):
    model_config = ConfigDict(extra="forbid")

    capital: DecimalStr | None = None
    trading_state: Literal["ACTIVE", "REDUCING", "HALTED"] | None = None
    calendar: str | None = Field(default=None, max_length=16)


class AccountRiskOut(Schema):
    account_id: UUID
    capital: str | None
    peak_equity: str
    trading_state: str
    calendar: str | None
    derisk_state: str
    version: int


class StatusOut(Schema):
    as_of: str
    limits: list[dict[str, Any]]
    default_limits: list[dict[str, Any]]
    accounts: list[dict[str, Any]]
    halted: list[dict[str, Any]]
    kill_switches: list[KillSwitchOut]
    breakers: list[BreakerOut]
    breaker_rules: list[dict[str, Any]]
    overrides: list[OverrideOut]
