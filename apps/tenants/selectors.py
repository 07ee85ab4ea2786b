"""Reads of tenants, members, keys and invitations, always scoped to one tenant."""

from __future__ import annotations

from uuid import UUID

from django.db.models import QuerySet

from apps.common.errors import NotFound
from apps.tenants.models import ApiKey, Invitation, Membership, Tenant, User


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
