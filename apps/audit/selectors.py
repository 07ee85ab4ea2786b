"""Reads of the audit log, scoped to one tenant."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from django.db.models import Q, QuerySet

from apps.audit.models import AuditLog


def audit_log_list(
    *,
    tenant_id: UUID,
    actor: str | None = None,
    action: str | None = None,
    resource: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
) -> QuerySet[AuditLog]:
    """The tenant's audit entries matching every filter given."""
    rows = AuditLog.objects.filter(tenant_id=tenant_id)
    if actor:
        try:
            actor_id = UUID(actor)
            rows = rows.filter(Q(actor_user_id=actor_id) | Q(actor_api_key_id=actor_id))
        except ValueError:
            rows = rows.filter(actor_label__iexact=actor)
    if action:
        rows = rows.filter(action=action)
    if resource:
        resource_type, _, resource_id = resource.partition(":")
        rows = rows.filter(resource_type=resource_type)
        if resource_id:
            rows = rows.filter(resource_id=resource_id)
    if created_from:
        rows = rows.filter(created_at__gte=created_from)
    if created_to:
        rows = rows.filter(created_at__lt=created_to)
    return rows
