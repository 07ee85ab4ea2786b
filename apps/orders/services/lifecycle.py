"""The one place that assigns `Order.state`: checks the transition table, bumps the version, and
writes the OrderEvent and the outbox event in the caller's transaction (audit rows are written
by the calling service)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from django.db.models import QuerySet
from django.utils import timezone

from apps.audit.models import AuditLog
from apps.audit.services import audit_entry
from apps.brokers.permissions import ALL_ACCOUNT_ROLES, accounts_for
from apps.common.context import Actor
from apps.common.errors import NotFound
from apps.events.models import OutboxEvent
from apps.events.services import outbox_batch, outbox_emit, outbox_event
from apps.orders.models import Order, OrderEvent
from apps.orders.serializers import order_to_dict
from apps.orders.state import TERMINAL, OrderState, advance
from apps.tenants.models import Tenant, User
from apps.tenants.scopes import Role

ORDER_STREAM = "ev.orders"
STATE_EVENT_KINDS = {
    OrderState.NEW: "order.created",
    OrderState.ROUTED: "order.routed",
    OrderState.PARTIALLY_FILLED: "order.partially_filled",
    OrderState.FILLED: "order.filled",
    OrderState.REJECTED: "order.rejected",
    OrderState.CANCELED: "order.canceled",
    OrderState.EXPIRED: "order.expired",
    OrderState.PENDING_CANCEL: "order.pending_cancel",
    OrderState.PENDING_MODIFY: "order.pending_modify",
}


def visible_orders(*, tenant: Tenant, user: User | None, role: Role | str | None) -> QuerySet[Order]:
    """The tenant's orders on accounts this member may see (every account for system work)."""
    orders = Order.objects.filter(tenant=tenant)
    if user is None or role is None or Role(role) in ALL_ACCOUNT_ROLES:
        return orders
    return orders.filter(account__in=accounts_for(tenant=tenant, user=user, role=role).values("id"))


def order_get_for_update(
    *, tenant: Tenant, order_id: UUID, user: User | None = None, role: Role | str | None = None
) -> Order:
    """Lock one order row for the rest of the transaction; NotFound outside the member's view."""
    try:
        return visible_orders(tenant=tenant, user=user, role=role).select_for_update(of=("self",)).get(id=order_id)
    except Order.DoesNotExist as exc:
        raise NotFound(f"Order {order_id} not found") from exc


def record_event(
    order: Order, *, kind: str, from_state: str, actor: Actor, detail: dict[str, Any] | None = None
) -> OrderEvent:
    """Append the order's next lifecycle event (its seq is the order's new version)."""
    event = order_event(order, kind=kind, from_state=from_state, actor=actor, detail=detail)
    pending = _pending_events.get()
    if pending is not None:
        pending.append(event)
    else:
        event.save(force_insert=True)
    return event


_pending_events: ContextVar[list[OrderEvent] | None] = ContextVar("order_events_pending", default=None)
# Orders changed in an `order_writes_batched` block (by object), with the fields to save at its end.
_pending_saves: ContextVar[dict[int, tuple[Order, set[str]]] | None] = ContextVar("order_saves", default=None)


def _order_save(order: Order, fields: Iterable[str]) -> None:
    """Save `fields` of the order now, or once at the end of the `order_writes_batched` block."""
    saves = _pending_saves.get()
    if saves is None:
        order.save(update_fields=sorted(set(fields)))
    else:
        saves.setdefault(id(order), (order, set()))[1].update(fields)


@contextmanager
def order_writes_batched() -> Iterator[None]:
    """Insert the order events and outbox rows written in the block at its end, one INSERT per
    table, and save each order changed in it once (the applier's batch: an acknowledgement and a
    fill of one order make one UPDATE). Only for a block without a savepoint that could roll back
    part of it; nothing in it may read the order rows or order events it writes."""
    pending: list[OrderEvent] = []
    saves: dict[int, tuple[Order, set[str]]] = {}
    token, saves_token = _pending_events.set(pending), _pending_saves.set(saves)
    try:
        with outbox_batch():
            yield
    finally:
        _pending_events.reset(token)
        _pending_saves.reset(saves_token)
    for order, fields in saves.values():
        order.save(update_fields=sorted(fields))
    OrderEvent.objects.bulk_create(pending)


def created_event(order: Order, *, actor: Actor, detail: dict[str, Any]) -> OrderEvent:
    """The unsaved first event of a new order (placing inserts those of an order and its legs at once)."""
    return order_event(order, kind="CREATED", from_state="", actor=actor, detail=detail)


def order_event(
    order: Order, *, kind: str, from_state: str, actor: Actor, detail: dict[str, Any] | None = None
) -> OrderEvent:
    return OrderEvent(
        tenant_id=order.tenant_id,
        order=order,
        seq=order.version,
        kind=kind,
        from_state=from_state,
        to_state=order.state,
        detail=detail or {},
        actor_label=actor.label[:255],
        created_at=order.updated_at,
    )


def publish(order: Order, *, kind: str) -> None:
    outbox_emit(
        tenant_id=order.tenant_id,
        stream=ORDER_STREAM,
        kind=kind,
        aggregate_type="order",
        aggregate_id=order.id,
        payload=order_to_dict(order),
    )


def order_outbox_event(order: Order, *, kind: str) -> OutboxEvent:
    """The unsaved outbox row `publish` would write (for `outbox_emit_many`)."""
    return outbox_event(
        tenant_id=order.tenant_id,
        stream=ORDER_STREAM,
        kind=kind,
        aggregate_type="order",
        aggregate_id=order.id,
        payload=order_to_dict(order),
    )


def order_touch(order: Order, *, fields: Iterable[str], actor: Actor, kind: str, detail: dict[str, Any]) -> Order:
    """Save a change that keeps the state (a modification, a fill while a request is pending)."""
    order.version += 1
    order.updated_at = timezone.now()
    _order_save(order, [*fields, "version", "updated_at"])
    record_event(order, kind=kind, from_state=order.state, actor=actor, detail=detail)
    publish(order, kind="order.updated")
    return order


def order_move(
    *,
    order: Order,
    to: OrderState,
    actor: Actor,
    reason: str,
    fields: Iterable[str] = (),
    detail: dict[str, Any] | None = None,
) -> Order:
    """Move `order` to `to` (checked against the table) and record the event and the outbox row."""
    current = OrderState(order.state)
    target = advance(current, to)
    now = timezone.now()
    order.state = target.value
    order.version += 1
    order.updated_at = now
    changed = {*fields, "state", "version", "updated_at"}
    if target in TERMINAL and order.closed_at is None:
        order.closed_at = now
        changed.add("closed_at")
    if target == OrderState.ROUTED and order.routed_at is None:
        order.routed_at = now
        changed.add("routed_at")
    _order_save(order, changed)
    record_event(
        order, kind="STATE", from_state=current.value, actor=actor, detail={"reason": reason, **(detail or {})}
    )
    publish(order, kind=STATE_EVENT_KINDS[target])
    return order


def audit_order(*, order: Order, actor: Actor, action: str, before: dict[str, Any] | None = None) -> None:
    """Audit one change of an order (inside the change's transaction)."""
    audit_order_entry(order=order, actor=actor, action=action, before=before).save(force_insert=True)


def audit_order_entry(*, order: Order, actor: Actor, action: str, before: dict[str, Any] | None = None) -> AuditLog:
    """The unsaved audit row of one change of an order (for `bulk_create`)."""
    return audit_entry(
        tenant_id=order.tenant_id,
        actor=actor,
        action=action,
        resource_type="order",
        resource_id=order.id,
        before=before,
        after={"state": order.state, "version": order.version, "quantity": str(order.quantity)},
    )
