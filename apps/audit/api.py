"""`/audit`: the tenant's audit log and its chain verification."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router

from apps.audit import selectors, services
from apps.audit.models import AuditLog
from apps.audit.schemas import AuditLogOut, AuditLogQuery, AuditVerifyOut
from apps.common.pagination import serialized_page
from apps.common.schemas import Page
from apps.tenants.auth import scoped

router = Router(tags=["audit"])


AUDIT_READERS = ("system:admin", "tenants:admin")


def _entry_out(entry: AuditLog) -> dict[str, Any]:
    return {
        "id": entry.id,
        "seq": entry.seq,
        "position": entry.position,
        "created_at": entry.created_at,
        "actor": {
            "kind": entry.actor_kind,
            "label": entry.actor_label,
            "user_id": entry.actor_user_id,
            "api_key_id": entry.actor_api_key_id,
        },
        "action": entry.action,
        "resource": {"type": entry.resource_type, "id": entry.resource_id},
        "before": entry.before,
        "after": entry.after,
        "ip": entry.ip,
        "user_agent": entry.user_agent,
        "trace_id": entry.trace_id,
        "hash": entry.hash,
        "prev_hash": entry.prev_hash,
    }


@router.get("/logs", response=Page[AuditLogOut], auth=scoped(AUDIT_READERS))
def list_audit_logs(request: HttpRequest, query: Query[AuditLogQuery]) -> dict[str, Any]:
    principal = request.auth  # type: ignore[attr-defined]
    services.audit_seal()  # entries committed a moment ago are listed with their place in the chain
    rows = selectors.audit_log_list(
        tenant_id=principal.tenant.id,
        actor=query.actor,
        action=query.action,
        resource=query.resource,
        created_from=query.from_,
        created_to=query.to,
    )
    return serialized_page(rows, limit=query.limit, cursor=query.cursor, serialize=_entry_out)


@router.get("/verify", response=AuditVerifyOut, auth=scoped(AUDIT_READERS))
def verify_audit_chain(request: HttpRequest) -> Any:
    return services.audit_verify(tenant_id=request.auth.tenant.id)  # type: ignore[attr-defined]
