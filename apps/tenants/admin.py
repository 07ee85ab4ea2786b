"""Operations admin for tenants, users, memberships, API keys and invitations (every change audited)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.http import HttpRequest

from apps.audit.admin import AuditedModelAdmin
from apps.tenants.authcache import auth_epoch_bump
from apps.tenants.models import ApiKey, Invitation, Membership, Tenant, User


class AuthAffectingAdmin(AuditedModelAdmin):
    """Edits here change who may act: cached authentications of the tenants involved are dropped."""

    def tenants_of(self, obj: Any) -> list[Any]:
        if isinstance(obj, Tenant):
            return [obj.pk]
        if isinstance(obj, User):
            return list(Membership.objects.filter(user=obj).values_list("tenant_id", flat=True))
        return [obj.tenant_id]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        for tenant_id in self.tenants_of(obj):
            auth_epoch_bump(tenant_id)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        tenant_ids = self.tenants_of(obj)
        super().delete_model(request, obj)
        for tenant_id in tenant_ids:
            auth_epoch_bump(tenant_id)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        tenant_ids = {tenant_id for obj in queryset for tenant_id in self.tenants_of(obj)}
        super().delete_queryset(request, queryset)
        for tenant_id in tenant_ids:
            auth_epoch_bump(tenant_id)


@admin.register(Tenant)
class TenantAdmin(AuthAffectingAdmin):
    list_display = ("slug", "name", "status", "display_timezone", "created_at")
    list_filter = ("status",)
    search_fields = ("slug", "name")
    readonly_fields = ("created_at", "updated_at")


@admin.register(User)
class UserAdmin(AuthAffectingAdmin, DjangoUserAdmin):
    ordering = ("email",)
    list_display = ("email", "full_name", "is_active", "is_staff", "mfa_enabled", "locked_until")
    list_filter = ("is_active", "is_staff")
    search_fields = ("email", "full_name")
    readonly_fields = ("date_joined", "last_login", "totp_confirmed_at", "failed_logins")
    fieldsets = (
        (None, {"fields": ("email", "password", "full_name")}),
        ("Status", {"fields": ("is_active", "is_staff", "is_superuser", "locked_until", "failed_logins")}),
        ("MFA", {"fields": ("totp_confirmed_at",)}),
        ("Dates", {"fields": ("date_joined", "last_login")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)

    @admin.display(boolean=True, description="MFA")
    def mfa_enabled(self, obj: User) -> bool:
        return obj.mfa_enabled


@admin.register(Membership)
class MembershipAdmin(AuthAffectingAdmin):
    list_display = ("user", "tenant", "role", "created_at")
    list_filter = ("role",)
    search_fields = ("user__email", "tenant__slug")
    autocomplete_fields = ("user", "tenant")


@admin.register(ApiKey)
class ApiKeyAdmin(AuthAffectingAdmin):
    list_display = ("name", "prefix", "tenant", "created_by", "expires_at", "revoked_at", "last_used_at")
    search_fields = ("name", "prefix", "tenant__slug")
    readonly_fields = ("prefix", "secret_hash", "created_by", "tenant", "last_used_at", "created_at")

    def has_add_permission(self, request: object) -> bool:
        return False  # keys are created through the API, where the clear key can be shown once


@admin.register(Invitation)
class InvitationAdmin(AuditedModelAdmin):
    list_display = ("email", "tenant", "role", "expires_at", "accepted_at", "revoked_at")
    search_fields = ("email", "tenant__slug")
    readonly_fields = ("token_hash",)
