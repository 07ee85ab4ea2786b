"""Reads of compliance rules and restricted lists, scoped to the tenant."""

from __future__ import annotations

from uuid import UUID

from django.db.models import QuerySet

from apps.common.queries import one_or_not_found
from apps.compliance.models import ComplianceRule, RestrictedEntry
from apps.tenants.models import Tenant


def compliance_rule_list(*, tenant: Tenant, kind: str | None = None) -> QuerySet[ComplianceRule]:
    """The tenant's rules, optionally of one kind."""
    rows = ComplianceRule.objects.filter(tenant=tenant)
    return rows.filter(kind=kind) if kind else rows


def compliance_rule_get(*, tenant: Tenant, rule_id: UUID) -> ComplianceRule:
    """One rule of the tenant; NotFound otherwise."""
    return one_or_not_found(ComplianceRule.objects, f"Compliance rule {rule_id} not found", tenant=tenant, id=rule_id)


def restricted_list(*, tenant: Tenant, kind: str | None = None, value: str | None = None) -> QuerySet[RestrictedEntry]:
    """The tenant's restricted list, optionally filtered by kind and value."""
    rows = RestrictedEntry.objects.filter(tenant=tenant)
    if kind:
        rows = rows.filter(kind=kind)
    if value:
        rows = rows.filter(value__iexact=value.strip())
    return rows


def restricted_get(*, tenant: Tenant, entry_id: UUID) -> RestrictedEntry:
    """One restricted entry of the tenant; NotFound otherwise."""
    return one_or_not_found(
        RestrictedEntry.objects, f"Restricted entry {entry_id} not found", tenant=tenant, id=entry_id
    )
