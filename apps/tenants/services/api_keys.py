"""API keys: created with a subset of the creator's scopes, shown once, stored hashed."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.common.context import Actor
from apps.common.errors import StateConflict, ValidationFailed
from apps.tenants.auth import API_KEY_PREFIX, hash_secret
from apps.tenants.authcache import auth_epoch_bump
from apps.tenants.models import ApiKey, Tenant, User
from apps.tenants.scopes import unknown_scopes
from apps.tenants.selectors import api_key_get


@dataclass(frozen=True, slots=True)
class IssuedKey:
    api_key: ApiKey
    key: str  # the clear key, returned to the client this once


def _snapshot(api_key: ApiKey) -> dict[str, object]:
    return {
        "name": api_key.name,
        "prefix": api_key.prefix,
        "scopes": sorted(api_key.scopes),
        "expires_at": api_key.expires_at,
        "revoked_at": api_key.revoked_at,
    }


def _new_secret(api_key: ApiKey) -> str:
    """Give `api_key` a fresh prefix and secret; return the clear key."""
    secret = secrets.token_urlsafe(32)
    api_key.prefix = secrets.token_hex(6)
    api_key.secret_hash = hash_secret(secret)
    return f"{API_KEY_PREFIX}{api_key.prefix}_{secret}"


def _validate(*, name: str, scopes: list[str], expires_at: datetime | None, granter_scopes: frozenset[str]) -> None:
    errors: dict[str, list[str]] = {}
    if not name.strip():
        errors["name"] = ["must not be blank"]
    if not scopes:
        errors["scopes"] = ["at least one scope is required"]
    elif unknown := unknown_scopes(scopes):
        errors["scopes"] = [f"unknown scope {scope!r}" for scope in unknown]
    elif beyond := sorted(set(scopes) - granter_scopes):
        errors["scopes"] = [f"you do not hold {scope!r}, so a key of yours cannot" for scope in beyond]
    if expires_at is not None and expires_at <= timezone.now():
        errors["expires_at"] = ["must be in the future"]
    if errors:
        raise ValidationFailed("Invalid API key request", fields=errors)


@transaction.atomic(durable=True)
def api_key_create(
    *,
    tenant: Tenant,
    actor: Actor,
    creator: User,
    creator_scopes: frozenset[str],
    name: str,
    scopes: list[str],
    expires_at: datetime | None,
) -> IssuedKey:
    """Create a key holding at most the creator's scopes; the clear key is returned once."""
    _validate(name=name, scopes=scopes, expires_at=expires_at, granter_scopes=creator_scopes)
    api_key = ApiKey(
        tenant=tenant, created_by=creator, name=name.strip(), scopes=sorted(set(scopes)), expires_at=expires_at
    )
    for _attempt in range(3):
        clear = _new_secret(api_key)
        try:
            with transaction.atomic():
                api_key.save(force_insert=True)
            break
        except IntegrityError:  # a prefix collision; 48 random bits make it vanishingly rare
            continue
    else:
        raise StateConflict("Could not allocate a unique key prefix; try again")
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="api_key.created",
        resource_type="api_key",
        resource_id=api_key.id,
        after=_snapshot(api_key),
    )
    return IssuedKey(api_key=api_key, key=clear)


@transaction.atomic(durable=True)
def api_key_revoke(*, tenant: Tenant, actor: Actor, api_key_id: UUID, owner: User | None) -> ApiKey:
    """Revoke a key at once; revoking a revoked key changes nothing."""
    api_key = api_key_get(tenant=tenant, api_key_id=api_key_id, owner=owner)
    api_key = ApiKey.objects.select_for_update().get(id=api_key.id)
    if api_key.revoked_at is None:
        before = _snapshot(api_key)
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        auth_epoch_bump(tenant.id)  # the key stops working on the very next request
        audit_record(
            tenant_id=tenant.id,
            actor=actor,
            action="api_key.revoked",
            resource_type="api_key",
            resource_id=api_key.id,
            before=before,
            after=_snapshot(api_key),
        )
    return api_key


@transaction.atomic(durable=True)
def api_key_rotate(*, tenant: Tenant, actor: Actor, api_key_id: UUID, owner: User | None) -> IssuedKey:
    """Issue a new key with the same name, scopes and expiry; the old one is revoked."""
    old = api_key_get(tenant=tenant, api_key_id=api_key_id, owner=owner)
    old = ApiKey.objects.select_for_update().get(id=old.id)
    if old.revoked_at is not None:
        raise StateConflict("A revoked key cannot be rotated")
    if old.expires_at is not None and old.expires_at <= timezone.now():
        raise StateConflict("An expired key cannot be rotated")
    old.revoked_at = timezone.now()
    old.save(update_fields=["revoked_at"])
    auth_epoch_bump(tenant.id)  # the old key stops working on the very next request
    new = ApiKey(
        tenant=tenant, created_by_id=old.created_by_id, name=old.name, scopes=old.scopes, expires_at=old.expires_at
    )
    clear = _new_secret(new)
    new.save(force_insert=True)
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="api_key.rotated",
        resource_type="api_key",
        resource_id=new.id,
        before={"id": old.id, **_snapshot(old)},
        after=_snapshot(new),
    )
    return IssuedKey(api_key=new, key=clear)
