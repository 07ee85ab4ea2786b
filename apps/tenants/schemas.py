"""API schemas of authentication, API keys, tenants, members and invitations."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from ninja import Schema
from pydantic import ConfigDict, EmailStr, Field

from apps.common.schemas import UtcDateTime


class StrictIn(Schema):
    """Input schemas refuse unknown fields, so a typo is an error and not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class TokenIn(StrictIn):
    username: str = Field(min_length=1, max_length=254, description="The user's email")
    password: str = Field(min_length=1, max_length=4096)
    tenant: str | None = Field(default=None, max_length=63, description="Tenant slug; needed for several tenants")
    otp: str | None = Field(default=None, pattern=r"^\d{6}$")


class TokenOut(Schema):
    access: str
    refresh: str
    token_type: str = "Bearer"
    expires_in: int


class RefreshIn(StrictIn):
    refresh: str = Field(min_length=1, max_length=4096)


class LogoutIn(StrictIn):
    refresh: str | None = Field(default=None, max_length=4096)


class TenantBrief(Schema):
    id: UUID
    slug: str
    name: str
    display_timezone: str


class UserBrief(Schema):
    id: UUID
    email: str
    full_name: str
    mfa_enabled: bool


class MeOut(Schema):
    user: UserBrief
    tenant: TenantBrief
    role: str
    scopes: list[str]
    auth: str = Field(description="JWT or API_KEY")
    api_key_id: UUID | None = None
    mfa_enrolment_only: bool = False


class ApiKeyIn(StrictIn):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(min_length=1, max_length=64)
    expires_at: UtcDateTime | None = None


class ApiKeyOut(Schema):
    id: UUID
    name: str
    prefix: str
    scopes: list[str]
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime
    created_by: str


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="The key in clear; shown this once")


class TotpEnrolOut(Schema):
    secret: str
    otpauth_uri: str


class OtpIn(StrictIn):
    otp: str = Field(pattern=r"^\d{6}$")


class TenantOut(Schema):
    id: UUID
    slug: str
    name: str
    display_timezone: str
    status: str
    ip_allowlist: list[str]
    mfa_required_roles: list[str]
    created_at: datetime
    updated_at: datetime


class TenantPatch(StrictIn):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    display_timezone: str | None = Field(default=None, max_length=64)
    ip_allowlist: list[str] | None = Field(default=None, max_length=100)
    mfa_required_roles: list[str] | None = Field(default=None, max_length=4)


class MemberOut(Schema):
    id: UUID
    user_id: UUID
    email: str
    full_name: str
    role: str
    mfa_enabled: bool
    created_at: datetime


class MemberIn(StrictIn):
    email: EmailStr
    role: str


class MemberPatch(StrictIn):
    role: str


class InvitationIn(StrictIn):
    email: EmailStr
    role: str


class InvitationOut(Schema):
    id: UUID
    email: str
    role: str
    expires_at: datetime
    accepted_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


class InvitationCreatedOut(InvitationOut):
    token: str = Field(description="Give it to the invitee; shown this once")


class InvitationAcceptIn(StrictIn):
    token: str = Field(min_length=10, max_length=200)
    password: str | None = Field(default=None, max_length=4096)
    full_name: str = Field(default="", max_length=200)


class ListQuery(StrictIn):
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=200)
