"""Reads of orders, their events and executions, scoped to the tenant and the member's accounts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from django.db.models import QuerySet

from apps.brokers.permissions import ALL_ACCOUNT_ROLES, accounts_for
from apps.common.errors import NotFound
from apps.orders.models import Execution, Order, OrderEvent
from apps.orders.services.lifecycle import visible_orders
from apps.tenants.models import Tenant, User
from apps.tenants.scopes import Role


@dataclass(frozen=True, slots=True)
class OrderFilters:
    state: str | None = None
    symbol: str | None = None
    account_id: UUID | None = None
    side: str | None = None
    strategy_id: UUID | None = None
    client_order_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def order_list(*, tenant: Tenant, user: User, role: Role | str, filters: OrderFilters) -> QuerySet[Order]:
    """The member's visible orders matching every given filter (newest first once paginated)."""
    orders = visible_orders(tenant=tenant, user=user, role=role)
    exact = {
        "state": filters.state,
        "symbol__iexact": filters.symbol,
        "account_id": filters.account_id,
        "side": filters.side,
        "strategy_id": filters.strategy_id,
        "client_order_id": filters.client_order_id,
        "created_at__gte": filters.created_after,
        "created_at__lt": filters.created_before,
    }
    return orders.filter(**{name: value for name, value in exact.items() if value is not None})


def order_get(*, tenant: Tenant, user: User, role: Role | str, order_id: UUID) -> Order:
    try:
        return visible_orders(tenant=tenant, user=user, role=role).get(id=order_id)
    except Order.DoesNotExist as exc:
        raise NotFound(f"Order {order_id} not found") from exc


def order_legs(*, order: Order) -> list[Order]:
    # Legs share the parent's created_at; ".tp" sorts after ".sl", so take-profit comes first as placed.
    return list(Order.objects.filter(parent=order).order_by("created_at", "-client_order_id"))


def order_event_list(*, order: Order) -> QuerySet[OrderEvent]:
    """The order's lifecycle, oldest first."""
    return OrderEvent.objects.filter(order=order).order_by("seq")


def execution_list(*, tenant: Tenant, user: User, role: Role | str, order: Order | None = None) -> QuerySet[Execution]:
    """Executions of the member's visible orders (or of one order)."""
    executions = Execution.objects.filter(tenant_id=tenant.id)
    if order is not None:
        return executions.filter(order_id=order.id)
    if Role(role) in ALL_ACCOUNT_ROLES:
        return executions
    return executions.filter(account_id__in=accounts_for(tenant=tenant, user=user, role=role).values("id"))
