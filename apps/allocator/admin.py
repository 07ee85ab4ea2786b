"""Admin of allocator jobs (read-mostly: state changes go through the services)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.allocator import services
from apps.allocator.models import AllocatorAssumptionOverride, AllocatorJob
from apps.allocator.state import CANCELABLE
from apps.common.context import Actor, ActorKind
from apps.common.errors import DomainError


@admin.register(AllocatorJob)
class AllocatorJobAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "tenant", "state", "progress", "stage", "attempts", "created_at", "finished_at")
    list_filter = ("state",)
    search_fields = ("id", "tenant__slug", "idempotency_key")
    ordering = ("-created_at",)
    readonly_fields = [field.name for field in AllocatorJob._meta.fields]
    actions = ("cancel_jobs",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Cancel the selected queued or running jobs")
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[AllocatorJob]) -> None:
        actor = Actor(
            kind=ActorKind.USER,
            label=f"admin:{request.user.get_username()}",
            user_id=getattr(request.user, "id", None),
            ip=request.META.get("REMOTE_ADDR"),
        )
        done = 0
        for job in queryset.filter(state__in=[state.value for state in CANCELABLE]).select_related("tenant"):
            try:
                services.allocator_job_cancel(tenant=job.tenant, actor=actor, job_id=job.id)
                done += 1
            except DomainError as exc:  # finished between the listing and the click
                self.message_user(request, f"{job.id}: {exc.message}", messages.WARNING)
        self.message_user(request, f"Canceled {done} job(s).")


@admin.register(AllocatorAssumptionOverride)
class AllocatorAssumptionOverrideAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("tenant", "updated_by", "updated_at")
    readonly_fields = ("tenant", "overrides", "updated_by", "created_at", "updated_at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
