"""Admin of market data subscriptions: read-only (changes go through the API, audited)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from apps.marketdata.models import MarketDataSubscription


@admin.register(MarketDataSubscription)
class MarketDataSubscriptionAdmin(admin.ModelAdmin):
    list_display = ("instrument", "tenant", "created_by", "created_at")
    list_filter = ("tenant",)
    search_fields = ("instrument__symbol",)
    list_select_related = ("instrument", "tenant", "created_by")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
