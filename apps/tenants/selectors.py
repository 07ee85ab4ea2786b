"""Reads of tenants, members, keys and invitations, always scoped to one tenant."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from uuid import UUID

from django.db import connection
from django.db.models import QuerySet

from apps.common.errors import NotFound
from apps.tenants import authcache
from apps.tenants.models import ApiKey, Invitation, Membership, Tenant, TokenFamily, User


def membership_list(*, tenant: Tenant) -> QuerySet[Membership]:
    return Membership.objects.filter(tenant=tenant).select_related("user")


def membership_get(*, tenant: Tenant, membership_id: UUID) -> Membership:
    try:
        return membership_list(tenant=tenant).get(id=membership_id)
    except Membership.DoesNotExist as exc:
        raise NotFound(f"Member {membership_id} not found") from exc


def api_key_list(*, tenant: Tenant, owner: User | None = None) -> QuerySet[ApiKey]:
    """The tenant's keys, or only `owner`'s when given (members who do not manage the tenant)."""
    keys = ApiKey.objects.filter(tenant=tenant).select_related("created_by")
    return keys if owner is None else keys.filter(created_by=owner)


def api_key_get(*, tenant: Tenant, api_key_id: UUID, owner: User | None = None) -> ApiKey:
    try:
        return api_key_list(tenant=tenant, owner=owner).get(id=api_key_id)
    except ApiKey.DoesNotExist as exc:
        raise NotFound(f"API key {api_key_id} not found") from exc


def invitation_list(*, tenant: Tenant) -> QuerySet[Invitation]:
    return Invitation.objects.filter(tenant=tenant)


def invitation_get(*, tenant: Tenant, invitation_id: UUID) -> Invitation:
    try:
        return invitation_list(tenant=tenant).get(id=invitation_id)
    except Invitation.DoesNotExist as exc:
        raise NotFound(f"Invitation {invitation_id} not found") from exc


@dataclass(frozen=True, slots=True)
class SessionMember:
    user: User
    tenant: Tenant
    role: str
    session_revoked: bool


_USER_FIELDS = ("id", "email", "full_name", "is_active", "totp_confirmed_at")
_TENANT_FIELDS = ("id", "slug", "name", "display_timezone", "status", "ip_allowlist", "mfa_required_roles")


@cache
def _session_member_sql() -> str:
    membership, user, tenant = Membership._meta.db_table, User._meta.db_table, Tenant._meta.db_table
    family = TokenFamily._meta.db_table
    columns = ", ".join([f"u.{name}" for name in _USER_FIELDS] + [f"t.{name}" for name in _TENANT_FIELDS])
    return (
        f"SELECT m.role, {columns}, "  # noqa: S608  (table and column names come from the models)
        f"EXISTS (SELECT 1 FROM {family} f WHERE f.id = %s AND f.revoked_at IS NOT NULL) "
        f"FROM {membership} m JOIN {user} u ON u.id = m.user_id JOIN {tenant} t ON t.id = m.tenant_id "
        "WHERE m.user_id = %s AND m.tenant_id = %s"
    )


def session_member_get(
    *, user_id: UUID, tenant_id: UUID, family_id: UUID | None, epoch: str | None = None
) -> SessionMember | None:
    """The member behind an access token, in one round trip (this runs on every API request).

    Hand-written SQL because the ORM's query compilation was the largest cost of an
    authenticated request in profiles; the other fields of user and tenant load on access.
    With the tenant's authentication `epoch` (see apps.tenants.authcache) the row may come from
    this process's cache instead; fresh model instances are built for every request either way.
    """
    key = (user_id, tenant_id, family_id)
    row = authcache.lookup(key, epoch) if epoch is not None else None
    if row is None:
        with connection.cursor() as cursor:
            cursor.execute(_session_member_sql(), [family_id, user_id, tenant_id])
            row = cursor.fetchone()
        if row is None:
            return None
        if epoch is not None:
            authcache.remember(key, epoch, tuple(row))
    user_values = row[1 : 1 + len(_USER_FIELDS)]
    tenant_values = row[1 + len(_USER_FIELDS) : 1 + len(_USER_FIELDS) + len(_TENANT_FIELDS)]
    return SessionMember(
        user=User.from_db(connection.alias, list(_USER_FIELDS), list(user_values)),
        tenant=Tenant.from_db(connection.alias, list(_TENANT_FIELDS), [_copy(value) for value in tenant_values]),
        role=row[0],
        session_revoked=bool(row[-1]),
    )


def _copy(value: object) -> object:
    # Lists (IP allowlist, MFA roles) are mutable: each request gets its own.
    return list(value) if isinstance(value, list) else value
