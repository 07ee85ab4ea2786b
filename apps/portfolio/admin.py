"""Read-only admin of positions and P&L snapshots (they change only through executions)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from apps.portfolio.models import PnlSnapshot, Position


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Position)
class PositionAdmin(ReadOnly):
    list_display = ("symbol", "account", "tenant", "quantity", "avg_cost", "realized_pnl", "updated_at")
    list_filter = ("currency",)
    search_fields = ("symbol",)


@admin.register(PnlSnapshot)
class PnlSnapshotAdmin(ReadOnly):
    list_display = ("day", "account", "tenant", "currency", "realized_pnl", "unrealized_pnl")
    date_hierarchy = "day"
