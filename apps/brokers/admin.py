"""Admin of broker accounts and instruments; status changes go through the services."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from guardian.admin import GuardedModelAdmin

from apps.brokers import services
from apps.brokers.models import BrokerAccount, Instrument
from apps.common.context import Actor, ActorKind


def _actor(request: HttpRequest) -> Actor:
    user: Any = request.user
    return Actor(kind=ActorKind.USER, label=f"admin:{user.email}", user_id=user.id)


@admin.register(BrokerAccount)
class BrokerAccountAdmin(GuardedModelAdmin):
    list_display = ("account_code", "broker", "mode", "tenant", "status", "last_heartbeat_at")
    list_filter = ("broker", "mode", "status")
    search_fields = ("account_code",)
    readonly_fields = ("status", "status_reason", "last_heartbeat_at", "connect_requested")
    exclude = ("credentials_encrypted",)
    actions = ("connect", "disconnect")

    @admin.action(description="Connect the selected accounts")
    def connect(self, request: HttpRequest, queryset: QuerySet[BrokerAccount]) -> None:
        for account in queryset:
            services.broker_account_connect(tenant=account.tenant, actor=_actor(request), account_id=account.id)

    @admin.action(description="Disconnect the selected accounts")
    def disconnect(self, request: HttpRequest, queryset: QuerySet[BrokerAccount]) -> None:
        for account in queryset:
            services.broker_account_disconnect(tenant=account.tenant, actor=_actor(request), account_id=account.id)


@admin.register(Instrument)
class InstrumentAdmin(admin.ModelAdmin):
    list_display = ("symbol", "exchange", "currency", "asset_class", "tick_size", "lot_size", "con_id", "active")
    list_filter = ("asset_class", "exchange", "active")
    search_fields = ("symbol", "description")
