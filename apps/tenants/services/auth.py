"""Sign-in, token rotation and sign-out.

Tokens are simplejwt's, with two claims of ours: `tenant_id` (a token acts in exactly one tenant)
and `fam`, the sign-in session (`TokenFamily`) every token minted from one login shares.
Presenting a refresh token that was already rotated away revokes its whole family: either the
client is confused or the token was stolen, and in both cases the session must end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import transaction
from django.utils import timezone
from rest_framework_simplejwt.exceptions import TokenBackendError, TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.state import token_backend
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from apps.audit.services import audit_record
from apps.common.context import Actor, ActorKind
from apps.common.errors import AuthenticationFailed, ValidationFailed
from apps.tenants.authcache import auth_epoch_bump
from apps.tenants.models import Membership, Tenant, TokenFamily, User
from apps.tenants.services.mfa import totp_check

# Hashing a dummy password for unknown emails keeps response times alike for known and unknown.
_DUMMY_PASSWORD_HASH = make_password("timing-equaliser-not-a-real-password")


@dataclass(frozen=True, slots=True)
class TokenPair:
    access: str
    refresh: str
    expires_in: int


def session_open(*, user: User, tenant: Tenant) -> TokenPair:
    """Open a sign-in session for a user already authenticated by other means (SSO, tests)."""
    family = TokenFamily.objects.create(user=user, tenant=tenant)
    return _issue(user=user, tenant=tenant, family=family)


def _issue(*, user: User, tenant: Tenant, family: TokenFamily, enrolment_only: bool = False) -> TokenPair:
    refresh = RefreshToken.for_user(user)
    refresh["tenant_id"] = str(tenant.id)
    refresh["fam"] = str(family.id)
    if enrolment_only:
        refresh["mfa_enrolment_only"] = True
    access = refresh.access_token
    return TokenPair(
        access=str(access),
        refresh=str(refresh),
        expires_in=int(jwt_settings.ACCESS_TOKEN_LIFETIME.total_seconds()),
    )


def _login_failed(*, user: User | None, tenant: Tenant | None, actor: Actor, reason: str) -> None:
    """Count a failure towards the lockout and audit it, in a transaction of its own."""
    now = timezone.now()
    window = timedelta(seconds=settings.LOGIN_LOCKOUT_WINDOW_SECONDS)
    with transaction.atomic():
        locked = False
        if user is not None:
            user = User.objects.select_for_update().get(id=user.id)
            if user.failed_login_window_start is None or now - user.failed_login_window_start > window:
                user.failed_logins, user.failed_login_window_start = 0, now
            user.failed_logins += 1
            if user.failed_logins >= settings.LOGIN_LOCKOUT_THRESHOLD:
                user.locked_until = now + timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS)
                user.failed_logins, user.failed_login_window_start = 0, None
                locked = True
            user.save(update_fields=["failed_logins", "failed_login_window_start", "locked_until"])
        tenant_id = tenant.id if tenant else None
        audit_record(
            tenant_id=tenant_id,
            actor=actor,
            action="auth.login_failed",
            resource_type="user",
            resource_id=user.id if user else "",
            after={"reason": reason},
        )
        if locked and user is not None:
            audit_record(
                tenant_id=tenant_id,
                actor=actor,
                action="auth.locked_out",
                resource_type="user",
                resource_id=user.id,
                after={"locked_until": user.locked_until},
            )


def _resolve_tenant(user: User, tenant_slug: str | None) -> tuple[Tenant, Membership] | None:
    memberships = list(Membership.objects.filter(user=user).select_related("tenant"))
    if tenant_slug:
        matches = [m for m in memberships if m.tenant.slug == tenant_slug]
    else:
        if len(memberships) > 1:
            raise ValidationFailed(
                "You belong to several tenants; say which one",
                fields={"tenant": [f"one of: {', '.join(sorted(m.tenant.slug for m in memberships))}"]},
            )
        matches = memberships
    if not matches:
        return None
    return matches[0].tenant, matches[0]


def token_obtain(
    *, email: str, password: str, tenant_slug: str | None, otp: str | None, actor: Actor, client_ip_allowed: Any
) -> TokenPair:
    """Check the credentials (and TOTP) and open a sign-in session in one tenant."""
    user = User.objects.filter(email__iexact=email.strip()).first()
    actor = Actor(
        kind=ActorKind.USER,
        label=email.strip()[:255],
        user_id=user.id if user else None,
        ip=actor.ip,
        user_agent=actor.user_agent,
    )
    if user is None:
        User(password=_DUMMY_PASSWORD_HASH).check_password(password)
        _login_failed(user=None, tenant=None, actor=actor, reason="unknown email")
        raise AuthenticationFailed("Invalid email or password")
    now = timezone.now()
    if user.locked_until and user.locked_until > now:
        _login_failed(user=None, tenant=None, actor=actor, reason="locked out")
        raise AuthenticationFailed(
            "Too many failed sign-ins; the account is locked for now",
            details={"locked_until": user.locked_until.isoformat().replace("+00:00", "Z")},
            hint="Wait for the lock to expire or ask a tenant admin",
        )
    if not user.check_password(password) or not user.is_active:
        _login_failed(user=user, tenant=None, actor=actor, reason="bad password or inactive user")
        raise AuthenticationFailed("Invalid email or password")
    resolved = _resolve_tenant(user, tenant_slug)
    if resolved is None:
        _login_failed(user=user, tenant=None, actor=actor, reason=f"not a member of tenant {tenant_slug!r}")
        raise AuthenticationFailed("Invalid email or password")
    tenant, membership = resolved
    if tenant.status != Tenant.Status.ACTIVE:
        raise AuthenticationFailed(f"Tenant {tenant.slug} is suspended")
    if not client_ip_allowed(tenant):
        _login_failed(user=user, tenant=tenant, actor=actor, reason="address outside the tenant's allowlist")
        raise AuthenticationFailed("Sign-in from this address is not allowed for this tenant")
    mfa_required = membership.role in tenant.mfa_required_roles
    enrolment_only = False
    if user.mfa_enabled:
        if not otp:
            raise AuthenticationFailed("A one-time code is required", details={"otp": ["required"]})
        if not totp_check(user=user, otp=otp):
            _login_failed(user=user, tenant=tenant, actor=actor, reason="bad one-time code")
            raise AuthenticationFailed("Invalid one-time code", details={"otp": ["invalid or already used"]})
    elif mfa_required:
        enrolment_only = True
    with transaction.atomic(durable=True):
        User.objects.filter(id=user.id).update(
            failed_logins=0, failed_login_window_start=None, locked_until=None, last_login=now
        )
        family = TokenFamily.objects.create(user=user, tenant=tenant)
        pair = _issue(user=user, tenant=tenant, family=family, enrolment_only=enrolment_only)
        audit_record(
            tenant_id=tenant.id,
            actor=actor,
            action="auth.login",
            resource_type="user",
            resource_id=user.id,
            after={"session": family.id, "mfa": user.mfa_enabled, "mfa_enrolment_only": enrolment_only},
        )
    return pair


def token_refresh(*, refresh: str, actor: Actor) -> TokenPair:
    """Rotate a refresh token: a new pair, the old refresh token revoked; reuse ends the session."""
    try:
        payload = token_backend.decode(refresh, verify=True)
    except (TokenError, TokenBackendError) as exc:
        raise AuthenticationFailed(f"Refresh token rejected: {exc}") from exc
    if payload.get(jwt_settings.TOKEN_TYPE_CLAIM) != "refresh" or "fam" not in payload:
        raise AuthenticationFailed("Not a refresh token")
    with transaction.atomic(durable=True):
        # The row locks make two concurrent rotations of one token take turns: the second sees
        # the first one's blacklisting and is treated as reuse.
        outstanding = OutstandingToken.objects.select_for_update().filter(jti=payload["jti"]).first()
        family = (
            TokenFamily.objects.select_for_update(of=("self",))
            .select_related("user", "tenant")
            .filter(id=payload["fam"])
            .first()
        )
        if outstanding is None or family is None:
            raise AuthenticationFailed("Refresh token is unknown")
        if family.revoked_at is not None:
            raise AuthenticationFailed("Session was signed out")
        user, tenant = family.user, family.tenant
        actor = _user_actor(user, actor)
        reused = BlacklistedToken.objects.filter(token=outstanding).exists()
        if reused:
            _revoke_family(family, reason="refresh token reuse")
            audit_record(
                tenant_id=tenant.id,
                actor=actor,
                action="auth.refresh_reuse_detected",
                resource_type="session",
                resource_id=family.id,
            )
        else:
            if not user.is_active or tenant.status != Tenant.Status.ACTIVE:
                raise AuthenticationFailed("The user or the tenant is deactivated")
            if not Membership.objects.filter(user=user, tenant=tenant).exists():
                raise AuthenticationFailed("No longer a member of this tenant")
            BlacklistedToken.objects.create(token=outstanding)
            pair = _issue(
                user=user, tenant=tenant, family=family, enrolment_only=bool(payload.get("mfa_enrolment_only"))
            )
            audit_record(
                tenant_id=tenant.id, actor=actor, action="auth.refresh", resource_type="session", resource_id=family.id
            )
    # Raised after the block so that the revocation above is committed.
    if reused:
        raise AuthenticationFailed("Refresh token was already used; the session has been revoked")
    return pair


def _user_actor(user: User, actor: Actor) -> Actor:
    return Actor(kind=ActorKind.USER, label=user.email, user_id=user.id, ip=actor.ip, user_agent=actor.user_agent)


def _revoke_family(family: TokenFamily, *, reason: str) -> None:
    TokenFamily.objects.filter(id=family.id, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_reason=reason
    )
    auth_epoch_bump(family.tenant_id)


@transaction.atomic(durable=True)
def logout(*, family_id: Any, tenant: Tenant, actor: Actor) -> None:
    """End the session: its refresh token and every access token minted from it stop working."""
    family = TokenFamily.objects.select_for_update().filter(id=family_id, tenant=tenant).first()
    if family is None:
        raise AuthenticationFailed("Signing out needs a user session token, not an API key")
    _revoke_family(family, reason="logout")
    audit_record(tenant_id=tenant.id, actor=actor, action="auth.logout", resource_type="session", resource_id=family.id)


def sessions_revoke(*, user: User, tenant: Tenant, reason: str) -> int:
    """End every session a user has in one tenant (removed from it, role lowered)."""
    auth_epoch_bump(tenant.id)
    return TokenFamily.objects.filter(user=user, tenant=tenant, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_reason=reason
    )


def expires_at_iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
