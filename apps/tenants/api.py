"""Routers of authentication (`/auth`) and tenant administration (`/tenants`)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.http import HttpRequest
from ninja import Query, Router, Status

from apps.common.context import ActorKind
from apps.common.errors import PermissionDenied
from apps.common.pagination import paginate
from apps.common.schemas import ErrorOut, Page
from apps.tenants import selectors
from apps.tenants.auth import AnonymousThrottle, authenticated, client_ip, ip_allowed, request_actor, scoped
from apps.tenants.models import ApiKey, Invitation, Membership, User
from apps.tenants.principal import Principal
from apps.tenants.schemas import (
    ApiKeyCreatedOut,
    ApiKeyIn,
    ApiKeyOut,
    InvitationAcceptIn,
    InvitationCreatedOut,
    InvitationIn,
    InvitationOut,
    ListQuery,
    LogoutIn,
    MemberIn,
    MemberOut,
    MemberPatch,
    MeOut,
    OtpIn,
    RefreshIn,
    TenantBrief,
    TenantOut,
    TenantPatch,
    TokenIn,
    TokenOut,
    TotpEnrolOut,
    UserBrief,
)
from apps.tenants.services import api_keys, auth, mfa, tenants

auth_router = Router(tags=["auth"])
tenants_router = Router(tags=["tenants"])


def _page(items: list[Any], next_cursor: str | None) -> dict[str, Any]:
    return {"items": items, "next": next_cursor}


# --- sign-in ---------------------------------------------------------------------------------


@auth_router.post("/token", response={200: TokenOut}, auth=None, throttle=[AnonymousThrottle()])
def obtain_token(request: HttpRequest, payload: TokenIn) -> auth.TokenPair:
    actor = request_actor(request, kind=ActorKind.USER, label=payload.username)
    address = client_ip(request)
    return auth.token_obtain(
        email=payload.username,
        password=payload.password,
        tenant_slug=payload.tenant,
        otp=payload.otp,
        actor=actor,
        client_ip_allowed=lambda tenant: ip_allowed(tenant, address),
    )


@auth_router.post("/token/refresh", response={200: TokenOut}, auth=None, throttle=[AnonymousThrottle()])
def refresh_token(request: HttpRequest, payload: RefreshIn) -> auth.TokenPair:
    return auth.token_refresh(
        refresh=payload.refresh, actor=request_actor(request, kind=ActorKind.USER, label="refresh")
    )


@auth_router.post("/logout", response={204: None}, auth=authenticated())
def logout(request: HttpRequest, payload: LogoutIn | None = None) -> Status:
    principal: Principal = request.auth  # type: ignore[attr-defined]
    auth.logout(family_id=principal.token_family_id, tenant=principal.tenant, actor=principal.actor)
    return Status(204, None)


@auth_router.get("/me", response=MeOut, auth=authenticated())
def get_me(request: HttpRequest) -> MeOut:
    principal: Principal = request.auth  # type: ignore[attr-defined]
    user, tenant = principal.user, principal.tenant
    # Built without validation (Ninja then only serialises it): every value comes typed from the
    # principal, and this is the API's most frequent call.
    return MeOut.model_construct(
        user=UserBrief.model_construct(
            id=user.id, email=user.email, full_name=user.full_name, mfa_enabled=user.mfa_enabled
        ),
        tenant=TenantBrief.model_construct(
            id=tenant.id, slug=tenant.slug, name=tenant.name, display_timezone=tenant.display_timezone
        ),
        role=principal.role.value,
        scopes=sorted(principal.scopes),
        auth="API_KEY" if principal.api_key else "JWT",
        api_key_id=principal.api_key.id if principal.api_key else None,
        mfa_enrolment_only=principal.mfa_enrolment_only,
    )


# --- MFA -------------------------------------------------------------------------------------


def _session_principal(request: HttpRequest) -> Principal:
    principal: Principal = request.auth  # type: ignore[attr-defined]
    if principal.api_key is not None:
        raise PermissionDenied("API keys cannot manage credentials; sign in as the user")
    return principal


@auth_router.post("/mfa/totp", response={201: TotpEnrolOut}, auth=authenticated())
def enrol_totp(request: HttpRequest) -> Status:
    principal = _session_principal(request)
    return Status(201, mfa.totp_enrol(user=principal.user, tenant=principal.tenant, actor=principal.actor))


@auth_router.post("/mfa/totp/confirm", response=UserBrief, auth=authenticated())
def confirm_totp(request: HttpRequest, payload: OtpIn) -> Any:
    principal = _session_principal(request)
    return mfa.totp_confirm(user=principal.user, tenant=principal.tenant, actor=principal.actor, otp=payload.otp)


@auth_router.post("/mfa/totp/disable", response=UserBrief, auth=authenticated())
def disable_totp(request: HttpRequest, payload: OtpIn) -> Any:
    principal = _session_principal(request)
    return mfa.totp_disable(user=principal.user, tenant=principal.tenant, actor=principal.actor, otp=payload.otp)


# --- API keys --------------------------------------------------------------------------------


def _api_key_out(api_key: ApiKey, **extra: Any) -> dict[str, Any]:
    return {
        "id": api_key.id,
        "name": api_key.name,
        "prefix": api_key.prefix,
        "scopes": api_key.scopes,
        "expires_at": api_key.expires_at,
        "revoked_at": api_key.revoked_at,
        "last_used_at": api_key.last_used_at,
        "created_at": api_key.created_at,
        "created_by": api_key.created_by.email,
        **extra,
    }


def _key_owner(principal: Principal) -> User | None:
    # Managers see and manage every key of the tenant; others only their own.
    return None if "tenants:manage" in principal.scopes else principal.user


@auth_router.get("/api-keys", response=Page[ApiKeyOut], auth=authenticated())
def list_api_keys(request: HttpRequest, query: Query[ListQuery]) -> dict[str, Any]:
    principal = _session_principal(request)
    keys = selectors.api_key_list(tenant=principal.tenant, owner=_key_owner(principal))
    rows, next_cursor = paginate(keys, limit=query.limit, cursor=query.cursor)
    return _page([_api_key_out(row) for row in rows], next_cursor)


@auth_router.post("/api-keys", response={201: ApiKeyCreatedOut}, auth=authenticated())
def create_api_key(request: HttpRequest, payload: ApiKeyIn) -> Status:
    principal = _session_principal(request)
    issued = api_keys.api_key_create(
        tenant=principal.tenant,
        actor=principal.actor,
        creator=principal.user,
        creator_scopes=principal.scopes,
        name=payload.name,
        scopes=payload.scopes,
        expires_at=payload.expires_at,
    )
    return Status(201, _api_key_out(issued.api_key, key=issued.key))


@auth_router.delete("/api-keys/{api_key_id}", response={204: None}, auth=authenticated())
def revoke_api_key(request: HttpRequest, api_key_id: UUID) -> Status:
    principal = _session_principal(request)
    api_keys.api_key_revoke(
        tenant=principal.tenant, actor=principal.actor, api_key_id=api_key_id, owner=_key_owner(principal)
    )
    return Status(204, None)


@auth_router.post("/api-keys/{api_key_id}/rotate", response={201: ApiKeyCreatedOut}, auth=authenticated())
def rotate_api_key(request: HttpRequest, api_key_id: UUID) -> Status:
    principal = _session_principal(request)
    issued = api_keys.api_key_rotate(
        tenant=principal.tenant, actor=principal.actor, api_key_id=api_key_id, owner=_key_owner(principal)
    )
    return Status(201, _api_key_out(issued.api_key, key=issued.key))


# --- tenant administration -------------------------------------------------------------------


@tenants_router.get("/current", response=TenantOut, auth=authenticated())
def get_current_tenant(request: HttpRequest) -> Any:
    return request.auth.tenant  # type: ignore[attr-defined]


@tenants_router.patch("/current", response=TenantOut, auth=scoped("tenants:admin"))
def update_current_tenant(request: HttpRequest, payload: TenantPatch) -> Any:
    principal: Principal = request.auth  # type: ignore[attr-defined]
    return tenants.tenant_update(
        tenant=principal.tenant, actor=principal.actor, changes=payload.model_dump(exclude_unset=True)
    )


def _member_out(membership: Membership) -> MemberOut:
    return MemberOut(
        id=membership.id,
        user_id=membership.user_id,
        email=membership.user.email,
        full_name=membership.user.full_name,
        role=membership.role,
        mfa_enabled=membership.user.mfa_enabled,
        created_at=membership.created_at,
    )


@tenants_router.get("/current/members", response=Page[MemberOut], auth=scoped("tenants:manage"))
def list_members(request: HttpRequest, query: Query[ListQuery]) -> Page[MemberOut]:
    tenant = request.auth.tenant  # type: ignore[attr-defined]
    rows, next_cursor = selectors.membership_page(tenant=tenant, limit=query.limit, cursor=query.cursor)
    # The rows come typed from the database: built without validation, Ninja only serialises them.
    return Page[MemberOut].model_construct(items=[MemberOut.model_construct(**row) for row in rows], next=next_cursor)


@tenants_router.post("/current/members", response={201: MemberOut}, auth=scoped("tenants:manage"))
def add_member(request: HttpRequest, payload: MemberIn) -> Status:
    principal: Principal = request.auth  # type: ignore[attr-defined]
    membership = tenants.member_add(
        tenant=principal.tenant,
        actor=principal.actor,
        actor_role=principal.role,
        email=payload.email,
        role=payload.role,
    )
    return Status(201, _member_out(membership))


@tenants_router.patch("/current/members/{membership_id}", response=MemberOut, auth=scoped("tenants:manage"))
def update_member(request: HttpRequest, membership_id: UUID, payload: MemberPatch) -> MemberOut:
    principal: Principal = request.auth  # type: ignore[attr-defined]
    membership = tenants.member_update(
        tenant=principal.tenant,
        actor=principal.actor,
        actor_role=principal.role,
        membership_id=membership_id,
        role=payload.role,
    )
    return _member_out(membership)


@tenants_router.delete("/current/members/{membership_id}", response={204: None}, auth=scoped("tenants:manage"))
def remove_member(request: HttpRequest, membership_id: UUID) -> Status:
    principal: Principal = request.auth  # type: ignore[attr-defined]
    tenants.member_remove(
        tenant=principal.tenant, actor=principal.actor, actor_role=principal.role, membership_id=membership_id
    )
    return Status(204, None)


def _invitation_out(invitation: Invitation, **extra: Any) -> dict[str, Any]:
    fields = ("id", "email", "role", "expires_at", "accepted_at", "revoked_at", "created_at")
    return {name: getattr(invitation, name) for name in fields} | extra


@tenants_router.get("/current/invitations", response=Page[InvitationOut], auth=scoped("tenants:manage"))
def list_invitations(request: HttpRequest, query: Query[ListQuery]) -> dict[str, Any]:
    tenant = request.auth.tenant  # type: ignore[attr-defined]
    rows, next_cursor = paginate(selectors.invitation_list(tenant=tenant), limit=query.limit, cursor=query.cursor)
    return _page([_invitation_out(row) for row in rows], next_cursor)


@tenants_router.post("/current/invitations", response={201: InvitationCreatedOut}, auth=scoped("tenants:manage"))
def create_invitation(request: HttpRequest, payload: InvitationIn) -> Status:
    principal: Principal = request.auth  # type: ignore[attr-defined]
    issued = tenants.invitation_create(
        tenant=principal.tenant,
        actor=principal.actor,
        actor_role=principal.role,
        invited_by=principal.user,
        email=payload.email,
        role=payload.role,
    )
    return Status(201, _invitation_out(issued.invitation, token=issued.token))


@tenants_router.delete("/current/invitations/{invitation_id}", response={204: None}, auth=scoped("tenants:manage"))
def revoke_invitation(request: HttpRequest, invitation_id: UUID) -> Status:
    principal: Principal = request.auth  # type: ignore[attr-defined]
    tenants.invitation_revoke(tenant=principal.tenant, actor=principal.actor, invitation_id=invitation_id)
    return Status(204, None)


@tenants_router.post(
    "/invitations/accept", response={201: MemberOut, 404: ErrorOut}, auth=None, throttle=[AnonymousThrottle()]
)
def accept_invitation(request: HttpRequest, payload: InvitationAcceptIn) -> Status:
    membership = tenants.invitation_accept(
        token=payload.token,
        password=payload.password,
        full_name=payload.full_name,
        actor=request_actor(request, kind=ActorKind.USER, label="invitee"),
    )
    return Status(201, _member_out(membership))
