"""API schemas of the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from ninja import Schema
from pydantic import ConfigDict, Field

from apps.common.schemas import UtcDateTime


class AuditLogQuery(Schema):
    model_config = ConfigDict(extra="forbid")

    actor: str | None = Field(default=None, max_length=255, description="actor label (email) or user / key id")
    action: str | None = Field(default=None, max_length=100)
    resource: str | None = Field(default=None, max_length=400, description="'type' or 'type:id'")
    from_: UtcDateTime | None = Field(default=None, alias="from")
    to: UtcDateTime | None = None
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=200)


class AuditLogOut(Schema):
    id: UUID
    seq: int = Field(description="insertion number (one sequence for every tenant: gaps are normal)")
    position: int = Field(description="place in the tenant's hash chain; 0 until sealed, moments after commit")
    created_at: datetime
    actor: dict[str, Any]
    action: str
    resource: dict[str, str]
    before: Any
    after: Any
    ip: str | None
    user_agent: str
    trace_id: str
    hash: str
    prev_hash: str


class AuditVerifyOut(Schema):
    valid: bool
    entries: int
    first_bad_id: UUID | None = None
    reason: str | None = None
