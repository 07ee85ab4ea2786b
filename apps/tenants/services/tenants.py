"""Tenant settings, members and invitations."""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import zoneinfo
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.common.context import Actor, ActorKind
from apps.common.errors import NotFound, PermissionDenied, StateConflict, ValidationFailed
from apps.tenants.authcache import auth_epoch_bump
from apps.tenants.models import Invitation, Membership, Tenant, User
from apps.tenants.scopes import Role, may_grant
from apps.tenants.selectors import invitation_get, membership_get
from apps.tenants.services.auth import sessions_revoke

TENANT_FIELDS = ("name", "display_timezone", "ip_allowlist", "mfa_required_roles")


def tenant_snapshot(tenant: Tenant) -> dict[str, Any]:
    return {"slug": tenant.slug, "status": tenant.status, **{name: getattr(tenant, name) for name in TENANT_FIELDS}}


def _validate_tenant_changes(changes: dict[str, Any]) -> None:
    errors: dict[str, list[str]] = {
        name: ["must not be null" + (" (send [] to clear)" if name in {"ip_allowlist", "mfa_required_roles"} else "")]
        for name, value in changes.items()
        if value is None
    }
    changes = {name: value for name, value in changes.items() if value is not None}
    if "name" in changes and not str(changes["name"]).strip():
        errors["name"] = ["must not be blank"]
    if "display_timezone" in changes:
        try:
            zoneinfo.ZoneInfo(changes["display_timezone"])
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            errors["display_timezone"] = [f"unknown time zone {changes['display_timezone']!r}"]
    for index, block in enumerate(changes.get("ip_allowlist") or []):
        try:
            ipaddress.ip_network(block, strict=False)
        except ValueError:
            errors[f"ip_allowlist.{index}"] = [f"{block!r} is not an IP address or CIDR block"]
    for index, role in enumerate(changes.get("mfa_required_roles") or []):
        if role not in Role.__members__:
            errors[f"mfa_required_roles.{index}"] = [f"unknown role {role!r}"]
    if errors:
        raise ValidationFailed("Invalid tenant settings", fields=errors)


@transaction.atomic(durable=True)
def tenant_update(*, tenant: Tenant, actor: Actor, changes: dict[str, Any]) -> Tenant:
    """Change the tenant's settings (name, time zone, IP allowlist, MFA policy)."""
    _validate_tenant_changes(changes)
    tenant = Tenant.objects.select_for_update().get(id=tenant.id)
    before = tenant_snapshot(tenant)
    for name, value in changes.items():
        if name in TENANT_FIELDS:
            setattr(tenant, name, sorted(set(value)) if isinstance(value, list) else value)
    tenant.save()
    auth_epoch_bump(tenant.id)  # allowlist, MFA policy and status apply to the next request
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="tenant.updated",
        resource_type="tenant",
        resource_id=tenant.id,
        before=before,
        after=tenant_snapshot(tenant),
    )
    return tenant


def _check_grant(granter_role: Role, role: str, *, field: str = "role") -> Role:
    if role not in Role.__members__:
        raise ValidationFailed("Invalid role", fields={field: [f"must be one of {', '.join(Role)}"]})
    if not may_grant(granter_role, role):
        raise PermissionDenied(f"A {granter_role} cannot grant the role {role}")
    return Role(role)


def _ensure_admin_remains(tenant: Tenant, membership: Membership) -> None:
    if membership.role != Role.ADMIN:
        return
    admins = Membership.objects.select_for_update().filter(tenant=tenant, role=Role.ADMIN)
    if admins.count() <= 1:
        raise StateConflict("A tenant must keep at least one ADMIN")


@transaction.atomic(durable=True)
def member_add(*, tenant: Tenant, actor: Actor, actor_role: Role, email: str, role: str) -> Membership:
    """Give an existing user a role in this tenant (new people get an invitation instead)."""
    granted = _check_grant(actor_role, role)
    user = User.objects.filter(email__iexact=email.strip()).first()
    if user is None:
        raise ValidationFailed("No user with this email", fields={"email": ["no such user; send an invitation"]})
    try:
        with transaction.atomic():
            membership = Membership.objects.create(tenant=tenant, user=user, role=granted)
    except IntegrityError as exc:
        raise StateConflict(f"{user.email} is already a member of this tenant") from exc
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="membership.created",
        resource_type="membership",
        resource_id=membership.id,
        after={"user": user.email, "role": granted},
    )
    return membership


@transaction.atomic(durable=True)
def member_update(*, tenant: Tenant, actor: Actor, actor_role: Role, membership_id: UUID, role: str) -> Membership:
    """Change a member's role; nobody can raise anyone above their own role."""
    granted = _check_grant(actor_role, role)
    membership = membership_get(tenant=tenant, membership_id=membership_id)
    membership = Membership.objects.select_for_update().select_related("user").get(id=membership.id)
    if not may_grant(actor_role, membership.role):
        raise PermissionDenied(f"A {actor_role} cannot change the role of a {membership.role}")
    if granted == membership.role:
        return membership
    if granted != Role.ADMIN:
        _ensure_admin_remains(tenant, membership)
    before = {"role": membership.role}
    membership.role = granted
    membership.save(update_fields=["role", "updated_at"])
    auth_epoch_bump(tenant.id)  # the new role's scopes apply to the member's next request
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="membership.updated",
        resource_type="membership",
        resource_id=membership.id,
        before=before,
        after={"role": granted},
    )
    return membership


@transaction.atomic(durable=True)
def member_remove(*, tenant: Tenant, actor: Actor, actor_role: Role, membership_id: UUID) -> None:
    """Remove a member and end their sessions in this tenant."""
    membership = membership_get(tenant=tenant, membership_id=membership_id)
    membership = Membership.objects.select_for_update().select_related("user").get(id=membership.id)
    if not may_grant(actor_role, membership.role):
        raise PermissionDenied(f"A {actor_role} cannot remove a {membership.role}")
    _ensure_admin_remains(tenant, membership)
    before = {"user": membership.user.email, "role": membership.role}
    membership.delete()
    sessions_revoke(user=membership.user, tenant=tenant, reason="removed from tenant")
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="membership.deleted",
        resource_type="membership",
        resource_id=membership_id,
        before=before,
    )


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedInvitation:
    invitation: Invitation
    token: str


@transaction.atomic(durable=True)
def invitation_create(
    *, tenant: Tenant, actor: Actor, actor_role: Role, invited_by: User, email: str, role: str
) -> IssuedInvitation:
    """Invite someone by email; the token (returned once) expires after INVITATION_TTL_HOURS."""
    granted = _check_grant(actor_role, role)
    try:
        validate_email(email)
    except DjangoValidationError as exc:
        raise ValidationFailed("Invalid email", fields={"email": ["not a valid email address"]}) from exc
    if Membership.objects.filter(tenant=tenant, user__email__iexact=email).exists():
        raise StateConflict(f"{email} is already a member of this tenant")
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        tenant=tenant,
        email=email.strip().lower(),
        role=granted,
        token_hash=_token_hash(token),
        invited_by=invited_by,
        expires_at=timezone.now() + timedelta(hours=settings.INVITATION_TTL_HOURS),
    )
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="invitation.created",
        resource_type="invitation",
        resource_id=invitation.id,
        after={"email": invitation.email, "role": granted, "expires_at": invitation.expires_at},
    )
    return IssuedInvitation(invitation=invitation, token=token)


@transaction.atomic(durable=True)
def invitation_revoke(*, tenant: Tenant, actor: Actor, invitation_id: UUID) -> Invitation:
    """Withdraw an invitation that has not been accepted."""
    invitation = invitation_get(tenant=tenant, invitation_id=invitation_id)
    invitation = Invitation.objects.select_for_update().get(id=invitation.id)
    if invitation.accepted_at is not None:
        raise StateConflict("The invitation was already accepted; remove the member instead")
    if invitation.revoked_at is None:
        invitation.revoked_at = timezone.now()
        invitation.save(update_fields=["revoked_at"])
        audit_record(
            tenant_id=tenant.id,
            actor=actor,
            action="invitation.revoked",
            resource_type="invitation",
            resource_id=invitation.id,
        )
    return invitation


@transaction.atomic(durable=True)
def invitation_accept(*, token: str, password: str | None, full_name: str, actor: Actor) -> Membership:
    """Join the tenant: creates the user if the email is new (then a password is needed)."""
    invitation = (
        Invitation.objects.select_for_update().select_related("tenant").filter(token_hash=_token_hash(token)).first()
    )
    if invitation is None or invitation.revoked_at is not None:
        raise NotFound("No such invitation")
    if invitation.accepted_at is not None:
        raise StateConflict("The invitation was already accepted")
    if invitation.expires_at <= timezone.now():
        raise StateConflict("The invitation has expired; ask for a new one")
    user = User.objects.filter(email__iexact=invitation.email).first()
    if user is None:
        if not password:
            raise ValidationFailed("A password is needed", fields={"password": ["required for a new account"]})
        candidate = User(email=invitation.email, full_name=full_name)
        try:
            validate_password(password, user=candidate)
        except DjangoValidationError as exc:
            raise ValidationFailed("Weak password", fields={"password": list(exc.messages)}) from exc
        user = User.objects.create_user(invitation.email, password, full_name=full_name)
    membership, created = Membership.objects.get_or_create(
        tenant=invitation.tenant, user=user, defaults={"role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    actor = Actor(kind=ActorKind.USER, label=user.email, user_id=user.id, ip=actor.ip, user_agent=actor.user_agent)
    audit_record(
        tenant_id=invitation.tenant_id,
        actor=actor,
        action="invitation.accepted",
        resource_type="membership",
        resource_id=membership.id,
        after={"user": user.email, "role": membership.role, "created": created},
    )
    return membership


@dataclass(frozen=True, slots=True)
class TenantProvisioned:
    tenant: Tenant
    admin: User
    created: bool


@transaction.atomic(durable=True)
def tenant_provision(*, slug: str, name: str, admin_email: str, admin_password: str, actor: Actor) -> TenantProvisioned:
    """Create a tenant with its first ADMIN; running it again changes nothing (idempotent)."""
    tenant, tenant_created = Tenant.objects.get_or_create(slug=slug, defaults={"name": name})
    admin = User.objects.filter(email__iexact=admin_email).first()
    if admin is None:
        admin = User.objects.create_user(admin_email, admin_password)
    _membership, membership_created = Membership.objects.get_or_create(
        tenant=tenant, user=admin, defaults={"role": Role.ADMIN}
    )
    if tenant_created or membership_created:
        audit_record(
            tenant_id=tenant.id,
            actor=actor,
            action="tenant.provisioned",
            resource_type="tenant",
            resource_id=tenant.id,
            after={**tenant_snapshot(tenant), "admin": admin.email},
        )
    return TenantProvisioned(tenant=tenant, admin=admin, created=tenant_created)
