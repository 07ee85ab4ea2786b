"""Reads of tenants, members, keys and invitations, always scoped to one tenant."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any
from uuid import UUID

from django.db import connection
from django.db.models import QuerySet

from apps.common.errors import NotFound
from apps.common.pagination import check_limit, keyset_sql, page_of
from apps.tenants import authcache
from apps.tenants.models import ApiKey, Invitation, Membership, Tenant, TokenFamily, User


def membership_list(*, tenant: Tenant) -> QuerySet[Membership]:
    return Membership.objects.filter(tenant=tenant).select_related("user")


_MEMBER_COLUMNS = ("id", "user_id", "email", "full_name", "role", "mfa_enabled", "created_at")


def membership_page(*, tenant: Tenant, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the tenant's members (newest first, as `paginate` orders), in one query.

    Rows come back as dicts of `MemberOut`'s fields. Hand-written SQL for the reason given at
    `session_member_get`: compiling the ORM query cost more than running it.
    """
    limit = check_limit(limit)
    after, params = keyset_sql(cursor, time_column="m.created_at", id_column="m.id")
    membership, user = Membership._meta.db_table, User._meta.db_table
    sql = (
        "SELECT m.id, m.user_id, u.email, u.full_name, m.role, u.totp_confirmed_at IS NOT NULL, m.created_at "  # noqa: S608  (names from the models)
        f"FROM {membership} m JOIN {user} u ON u.id = m.user_id WHERE m.tenant_id = %s{after} "
        "ORDER BY m.created_at DESC, m.id DESC LIMIT %s"
    )
    with connection.cursor() as db:
        db.execute(sql, [tenant.id, *params, limit + 1])
        rows = [dict(zip(_MEMBER_COLUMNS, row, strict=True)) for row in db.fetchall()]
    return page_of(rows, limit=limit)


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


@dataclass(frozen=True, slots=True)
class ApiKeyIdentity:
    """What never changes for a key prefix: the key, its tenant and its secret's hash."""

    api_key_id: UUID
    tenant_id: UUID
    secret_hash: str


@dataclass(frozen=True, slots=True)
class ApiKeySession:
    api_key: ApiKey  # with `tenant` and `created_by` loaded
    creator_role: str | None  # the creator's role in the key's tenant today; None: no longer a member


_KEY_FIELDS = (
    "id",
    "tenant_id",
    "created_by_id",
    "name",
    "prefix",
    "secret_hash",
    "scopes",
    "expires_at",
    "revoked_at",
    "last_used_at",
    "created_at",
)
# Prefixes are unique and a key's prefix, tenant and secret never change (rotation issues a new
# key), so what was read for a prefix holds while the process lives. Bounded like authcache.
_identities: dict[str, ApiKeyIdentity] = {}
IDENTITIES_MAX = 20_000


@cache
def _api_key_session_sql(by: str) -> str:
    membership, user, tenant, key = (
        Membership._meta.db_table,
        User._meta.db_table,
        Tenant._meta.db_table,
        ApiKey._meta.db_table,
    )
    columns = ", ".join(
        [f"k.{name}" for name in _KEY_FIELDS]
        + [f"u.{name}" for name in _USER_FIELDS]
        + [f"t.{name}" for name in _TENANT_FIELDS]
    )
    return (
        f"SELECT {columns}, "  # noqa: S608  (table and column names come from the models)
        f"(SELECT m.role FROM {membership} m WHERE m.tenant_id = k.tenant_id AND m.user_id = k.created_by_id) "
        f"FROM {key} k JOIN {user} u ON u.id = k.created_by_id JOIN {tenant} t ON t.id = k.tenant_id "
        f"WHERE k.{by} = %s"
    )


def _api_key_session(row: tuple[object, ...]) -> ApiKeySession:
    ends = (len(_KEY_FIELDS), len(_KEY_FIELDS) + len(_USER_FIELDS))
    api_key = ApiKey.from_db(connection.alias, list(_KEY_FIELDS), [_copy(value) for value in row[: ends[0]]])
    api_key.created_by = User.from_db(connection.alias, list(_USER_FIELDS), list(row[ends[0] : ends[1]]))
    api_key.tenant = Tenant.from_db(
        connection.alias, list(_TENANT_FIELDS), [_copy(value) for value in row[ends[1] : -1]]
    )
    return ApiKeySession(api_key=api_key, creator_role=row[-1])  # type: ignore[arg-type]


def _fetch_api_key_session(by: str, value: object) -> tuple[object, ...] | None:
    with connection.cursor() as cursor:
        cursor.execute(_api_key_session_sql(by), [value])
        row = cursor.fetchone()
    return tuple(row) if row is not None else None


def api_key_identity_get(*, prefix: str) -> tuple[ApiKeyIdentity | None, ApiKeySession | None]:
    """The identity behind a key prefix, from this process's memory when it has seen the prefix.

    On a first sight the whole key is read (one query) and comes back too, current as of now;
    otherwise the session is None and `api_key_session_get` gives it under the tenant's epoch.
    """
    identity = _identities.get(prefix)
    if identity is not None:
        return identity, None
    row = _fetch_api_key_session("prefix", prefix)
    if row is None:
        return None, None
    session = _api_key_session(row)
    api_key = session.api_key
    identity = ApiKeyIdentity(api_key_id=api_key.id, tenant_id=api_key.tenant_id, secret_hash=api_key.secret_hash)
    if len(_identities) >= IDENTITIES_MAX:
        _identities.clear()
    _identities[prefix] = identity
    return identity, session


def api_key_identity_forget(*, prefix: str) -> None:
    """Drop what this process remembers of a prefix (its key was deleted)."""
    _identities.pop(prefix, None)


def api_key_session_get(*, api_key_id: UUID, epoch: str | None) -> ApiKeySession | None:
    """The key with its creator, tenant and the creator's current role, in one round trip.

    Like `session_member_get`: with the tenant's authentication `epoch` (read before this call)
    the row may come from this process's cache; fresh model instances for every request.
    """
    key = ("api_key", api_key_id)
    row = authcache.lookup(key, epoch) if epoch is not None else None
    if row is None:
        row = _fetch_api_key_session("id", api_key_id)
        if row is None:
            return None
        if epoch is not None:
            authcache.remember(key, epoch, row)
    return _api_key_session(row)
