"""The one writer of broker events: acknowledgements, executions, cancels, rejects, expiries.

Idempotent by construction: an execution claims its broker exec id in `ExecutionKey` (a replay
finds the key taken and changes nothing), and an acknowledgement, cancel, reject or expiry for an
order already in the resulting state is a no-op. Orders are re-read by id and account; a message
never decides which tenant a row belongs to.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import structlog
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.brokers.ib import wire
from apps.common.context import Actor
from apps.orders.models import Execution, ExecutionKey, Order, OrderEvent
from apps.orders.services.changes import MODIFIABLE
from apps.orders.services.lifecycle import audit_order, order_move, order_touch
from apps.orders.state import TERMINAL, OrderState, Progress, apply_fill
from apps.portfolio.services import ExecutionData, PositionMove, position_apply_execution, position_move_audit

log = structlog.get_logger(__name__)
BROKER = Actor.system("broker")


@dataclass(frozen=True, slots=True)
class Fill:
    exec_id: str
    quantity: Decimal
    price: Decimal
    commission: Decimal
    currency: str
    executed_at: datetime


@dataclass(frozen=True, slots=True)
class BrokerEvent:
    """One broker event, as connectors put it on the broker event stream.

    `kind` is `accepted`, `execution`, `cancelled`, `rejected` or `expired`; `request` says which
    of our requests a reject answers (`submit`, `cancel`, `modify`).
    """

    kind: str
    account_id: UUID
    order_id: UUID
    broker_order_id: str = ""
    fill: Fill | None = None
    reason: str = ""
    request: str = "submit"


def broker_event_decode(fields: dict[str, str]) -> BrokerEvent | None:
    """The broker event of one `ib:events` entry (`apps.brokers.ib.wire`); None for other kinds.

    Raises ValueError (or KeyError) for a malformed entry of a known kind.
    """
    if fields.get("kind") not in wire.KINDS:
        return None
    arguments = wire.decode(fields)
    fill = arguments.pop("fill")
    return BrokerEvent(**arguments, fill=Fill(**fill) if fill else None)


def _working_state(order: Order) -> OrderState:
    return OrderState.PARTIALLY_FILLED if order.filled_quantity > 0 else OrderState.ROUTED


def _accepted(order: Order, event: BrokerEvent) -> bool:
    fields = []
    if event.broker_order_id and order.broker_order_id != event.broker_order_id:
        order.broker_order_id = event.broker_order_id
        fields.append("broker_order_id")
    state = OrderState(order.state)
    if state == OrderState.NEW:
        order_move(order=order, to=OrderState.ROUTED, actor=BROKER, reason="accepted by broker", fields=fields)
        return True
    if state == OrderState.PENDING_MODIFY:
        order_move(
            order=order, to=_working_state(order), actor=BROKER, reason="modification acknowledged", fields=fields
        )
        return True
    if fields:
        order_touch(
            order, fields=fields, actor=BROKER, kind="BROKER_ID", detail={"broker_order_id": event.broker_order_id}
        )
        return True
    return False


def _execution(order: Order, fill: Fill) -> PositionMove | None:
    try:
        with transaction.atomic():
            execution = Execution.objects.create(
                tenant_id=order.tenant_id,
                order_id=order.id,
                account_id=order.account_id,
                symbol=order.symbol,
                side=order.side,
                broker_exec_id=fill.exec_id,
                quantity=fill.quantity,
                price=fill.price,
                commission=fill.commission,
                currency=fill.currency,
                executed_at=fill.executed_at,
                created_at=timezone.now(),
            )
            ExecutionKey.objects.create(
                account_id=order.account_id, broker_exec_id=fill.exec_id, execution_id=execution.id
            )
    except IntegrityError:
        log.info("orders.execution_replayed", exec_id=fill.exec_id, order_id=str(order.id))
        return None
    # The fill happened whatever the order's state says (even after a cancel): the position moves.
    move = position_apply_execution(
        tenant_id=order.tenant_id,
        execution=ExecutionData(
            account_id=order.account_id,
            instrument_id=order.instrument_id,
            exec_id=fill.exec_id,
            side=order.side,
            quantity=fill.quantity,
            price=fill.price,
            commission=fill.commission,
            executed_at=fill.executed_at,
        ),
    )
    before = OrderState(order.state)
    progress = apply_fill(
        Progress(before, order.quantity, order.filled_quantity, order.filled_notional),
        quantity=fill.quantity,
        price=fill.price,
    )
    order.filled_quantity, order.filled_notional = progress.filled, progress.notional
    fields = ["filled_quantity", "filled_notional"]
    detail = {"exec_id": fill.exec_id, "quantity": str(fill.quantity), "price": str(fill.price)}
    if progress.state != before or before == OrderState.PARTIALLY_FILLED:
        order_move(order=order, to=progress.state, actor=BROKER, reason="execution", fields=fields, detail=detail)
    else:
        # A fill while a request is pending, or after the order closed: recorded, state kept.
        order_touch(order, fields=fields, actor=BROKER, kind="EXECUTION", detail=detail)
    return move


def _revert_modification(order: Order) -> dict[str, str | None]:
    """Put back the values the pending modification replaced (the broker kept the old ones)."""
    pending = OrderEvent.objects.filter(order=order, to_state=OrderState.PENDING_MODIFY.value).order_by("-seq").first()
    before: dict[str, str | None] = (pending.detail or {}).get("before", {}) if pending is not None else {}
    for name, value in before.items():
        if name in MODIFIABLE:
            setattr(order, name, Decimal(value) if value is not None else None)
    return {name: value for name, value in before.items() if name in MODIFIABLE}


def _closed(order: Order, event: BrokerEvent) -> bool:
    state = OrderState(order.state)
    if event.kind == "rejected" and event.request in ("cancel", "modify"):
        # The broker refused our cancel / modification: the order keeps working.
        if state not in (OrderState.PENDING_CANCEL, OrderState.PENDING_MODIFY):
            return False
        reason = f"{event.request} rejected: {event.reason}"
        fields = _revert_modification(order) if state == OrderState.PENDING_MODIFY else {}
        order_move(
            order=order,
            to=_working_state(order),
            actor=BROKER,
            reason=reason,
            fields=fields,
            detail={"reverted": fields},
        )
        return True
    target = {"cancelled": OrderState.CANCELED, "rejected": OrderState.REJECTED, "expired": OrderState.EXPIRED}[
        event.kind
    ]
    if state in TERMINAL:
        return False
    fields = []
    if target == OrderState.REJECTED:
        order.reject_reason = event.reason[:500]
        fields.append("reject_reason")
    order_move(order=order, to=target, actor=BROKER, reason=event.reason or event.kind, fields=fields)
    return True


def _apply(order: Order, event: BrokerEvent) -> tuple[bool, PositionMove | None]:
    """Apply one event to its locked order; return whether it changed and the position it moved."""
    if event.kind == "accepted":
        return _accepted(order, event), None
    if event.kind == "execution" and event.fill is not None:
        move = _execution(order, event.fill)
        return move is not None, move
    if event.kind in ("cancelled", "rejected", "expired"):
        return _closed(order, event), None
    log.warning("orders.broker_event_unknown_kind", kind=event.kind, order_id=str(order.id))
    return False, None


def _audit(audits: list[tuple[Order, str, PositionMove | None]]) -> None:
    # Audit rows last: the tenant's audit chain head stays locked from the first one to the commit.
    for order, kind, move in audits:
        if move is not None:
            position_move_audit(move=move, actor=BROKER)
        audit_order(order=order, actor=BROKER, action=f"order.broker_{kind}")


@transaction.atomic(durable=True)
def broker_event_apply(*, event: BrokerEvent) -> Order | None:
    """Apply one broker event to its order; return the order, or None when it is unknown."""
    try:
        order = Order.objects.select_for_update().get(id=event.order_id, account_id=event.account_id)
    except Order.DoesNotExist:
        log.warning("orders.broker_event_unknown_order", order_id=str(event.order_id), kind=event.kind)
        return None
    changed, move = _apply(order, event)
    if changed:
        _audit([(order, event.kind, move)])
    return order


@transaction.atomic(durable=True)
def broker_events_apply(*, events: Sequence[BrokerEvent]) -> int:
    """Apply broker events in stream order in one transaction; return how many changed an order.

    One commit and one hold of the audit chain head for the batch instead of one per event. The
    orders are locked up front in id order (as the kill switch's batches lock them), so the two
    cannot deadlock. A DomainError (a broker anomaly) rolls the whole batch back: the caller then
    applies its events one by one with `broker_event_apply`.
    """
    ids = sorted({event.order_id for event in events})
    orders = {order.id: order for order in Order.objects.select_for_update().filter(id__in=ids).order_by("id")}
    audits: list[tuple[Order, str, PositionMove | None]] = []
    for event in events:
        order = orders.get(event.order_id)
        if order is None or order.account_id != event.account_id:
            log.warning("orders.broker_event_unknown_order", order_id=str(event.order_id), kind=event.kind)
            continue
        changed, move = _apply(order, event)
        if changed:
            # A copy: a later event of the batch moves the order on, its audit row says where it was.
            audits.append((copy.copy(order), event.kind, move))
    _audit(audits)
    return len(audits)
