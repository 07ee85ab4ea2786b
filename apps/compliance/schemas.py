"""Ninja schemas of the compliance API: rules and restricted lists."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from ninja import Field, Schema
from pydantic import ConfigDict

from apps.common.schemas import PageQuery, UtcDateTime

RuleKindName = Literal["TRADING_HOURS", "RESTRICTED_HOURS", "WASH_TRADE"]


class RuleIn(Schema):
    model_config = ConfigDict(extra="forbid")

    kind: RuleKindName
    name: str = Field(default="", max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class RulePatch(Schema):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=100)
    params: dict[str, Any] | None = None
    enabled: bool | None = None


class RuleOut(Schema):
    id: UUID
    kind: str
    name: str
    params: dict[str, Any]
    enabled: bool
    version: int
    created_at: str
    updated_at: str


class RuleQuery(PageQuery):
    kind: RuleKindName | None = None


class RestrictedIn(Schema):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["SYMBOL", "ACCOUNT"]
    value: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=500)
    valid_from: UtcDateTime | None = None
    valid_until: UtcDateTime | None = None


class RestrictedPatch(Schema):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, min_length=1, max_length=500)
    valid_from: UtcDateTime | None = None
    valid_until: UtcDateTime | None = None


class RestrictedOut(Schema):
    id: UUID
    kind: str
    value: str
    reason: str
    valid_from: str | None
    valid_until: str | None
    version: int
    created_at: str
    updated_at: str


class RestrictedQuery(PageQuery):
    kind: Literal["SYMBOL", "ACCOUNT"] | None = None
    value: str | None = Field(default=None, max_length=64)
