"""Admin for the audit log (read-only) and `AuditedModelAdmin`, the base of every other admin,
which writes an audit row for each add, change and delete done through Django admin."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.forms.models import model_to_dict
from django.http import HttpRequest

from apps.audit.models import AuditLog
from apps.audit.services import audit_record
from apps.common.context import Actor, ActorKind

REDACTED_FIELDS = frozenset({"password", "secret_hash", "token_hash", "totp_secret_encrypted", "credentials_encrypted"})


def admin_actor(request: HttpRequest) -> Actor:
    user = request.user
    return Actor(
        kind=ActorKind.USER,
        label=f"admin:{getattr(user, 'email', user)}",
        user_id=getattr(user, "id", None),
        ip=request.META.get("REMOTE_ADDR"),
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:512],
    )


def snapshot(obj: Model) -> dict[str, Any]:
    data = model_to_dict(obj)
    data["id"] = obj.pk
    return {name: "[redacted]" if name in REDACTED_FIELDS else value for name, value in data.items()}


def tenant_of(obj: Model) -> Any:
    if obj._meta.label == "tenants.Tenant":
        return obj.pk
    return getattr(obj, "tenant_id", None)


class AuditedModelAdmin(admin.ModelAdmin):
    """Every add, change and delete through the admin is audited in the same transaction."""

    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        before = snapshot(type(obj).objects.get(pk=obj.pk)) if change and obj.pk else None
        super().save_model(request, obj, form, change)
        audit_record(
            tenant_id=tenant_of(obj),
            actor=admin_actor(request),
            action="admin.change" if change else "admin.add",
            resource_type=obj._meta.label_lower,
            resource_id=obj.pk,
            before=before,
            after=snapshot(obj),
        )

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        before = snapshot(obj)
        tenant_id, pk = tenant_of(obj), obj.pk
        super().delete_model(request, obj)
        audit_record(
            tenant_id=tenant_id,
            actor=admin_actor(request),
            action="admin.delete",
            resource_type=obj._meta.label_lower,
            resource_id=pk,
            before=before,
        )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for obj in list(queryset):
            self.delete_model(request, obj)


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    """The audit log is evidence: it can be read and searched here, never changed."""

    list_display = (
        "created_at",
        "tenant_id",
        "seq",
        "position",
        "actor_label",
        "action",
        "resource_type",
        "resource_id",
    )
    list_filter = ("action", "actor_kind", "resource_type")
    search_fields = ("actor_label", "action", "resource_id", "trace_id")
    ordering = ("-created_at",)
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
