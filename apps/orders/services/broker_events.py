"""The one writer of broker events: acknowledgements, executions, cancels, rejects, expiries.

Idempotent by construction: an execution claims its broker exec id in `ExecutionKey` (a replay
finds the key taken and changes nothing), and an acknowledgement, cancel, reject or expiry for an
order already in the resulting state is a no-op. Orders are re-read by id and account; a message
never decides which tenant a row belongs to.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import structlog
from django.db import connection, transaction
from django.utils import timezone

from apps.audit.models import AuditLog
from apps.brokers.ib import wire
from apps.common.context import Actor
from apps.orders.models import Execution, Order, OrderEvent
from apps.orders.services import broker_reports
from apps.orders.services.changes import MODIFIABLE
from apps.orders.services.lifecycle import audit_order_entry, order_move, order_touch, order_writes_batched
from apps.orders.services.risk import residual_guard
from apps.orders.state import TERMINAL, OrderState, Progress, apply_fill
from apps.portfolio.services import (
    ExecutionData,
    PositionMove,
    position_apply_execution,
    position_move_audit_entry,
    positions_batched,
    positions_flush,
)
from apps.risk.services.breakers import ack_latency_observe

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
    details: dict[str, str] | None = None  # `adopted` only: the order found at the broker


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
        ack_latency_observe(
            order_id=order.id, account_id=order.account_id, tenant_id=order.tenant_id, sent_at=order.created_at
        )
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


_CLAIM_EXEC_ID = """
    INSERT INTO orders_executionkey (account_id, broker_exec_id, execution_id, created_at)
    VALUES (%s, %s, %s, %s)
    ON CONFLICT (account_id, broker_exec_id) DO NOTHING
    RETURNING id
"""


_CLAIM_EXEC_IDS = """
    INSERT INTO orders_executionkey (account_id, broker_exec_id, execution_id, created_at)
    SELECT * FROM unnest(%s::uuid[], %s::varchar[], %s::uuid[], %s::timestamptz[])
    ON CONFLICT (account_id, broker_exec_id) DO NOTHING
    RETURNING account_id, broker_exec_id
"""


@dataclass(slots=True)
class _Batch:
    """The executions of one `broker_events_apply` batch: exec ids claimed with one statement up
    front (each claim used once, by the batch's first event with that exec id), rows inserted
    with one statement at the end."""

    claimed: dict[tuple[UUID, str], UUID] = field(default_factory=dict)  # (account, exec id) -> execution id
    executions: list[Execution] = field(default_factory=list)

    def claim(self, fills: Sequence[tuple[UUID, str]]) -> None:
        keys = list(dict.fromkeys(fills))  # an exec id twice in the batch: claimed once
        if not keys:
            return
        ids = [uuid.uuid4() for _ in keys]
        now = timezone.now()
        with connection.cursor() as cursor:
            cursor.execute(
                _CLAIM_EXEC_IDS,
                [[account for account, _ in keys], [exec_id for _, exec_id in keys], ids, [now] * len(keys)],
            )
            taken = {(row[0], row[1]) for row in cursor.fetchall()}
        self.claimed = {key: id_ for key, id_ in zip(keys, ids, strict=True) if key in taken}

    def flush(self) -> None:
        """Insert the executions recorded so far (before anything reads them), and save the positions."""
        if self.executions:
            Execution.objects.bulk_create(self.executions)
            self.executions = []
        positions_flush()


def _claim(order: Order, fill: Fill, execution: Execution, batch: _Batch | None) -> bool:
    """Claim the fill's exec id for `execution`; False when it was claimed before (a replay)."""
    if batch is not None:
        claimed = batch.claimed.pop((order.account_id, fill.exec_id), None)
        if claimed is None:
            return False
        execution.id = claimed
        batch.executions.append(execution)
        return True
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_EXEC_ID, [order.account_id, fill.exec_id, execution.id, execution.created_at])
        claimed = cursor.fetchone() is not None
    if claimed:
        execution.save(force_insert=True)
    return claimed


def _execution(order: Order, fill: Fill, batch: _Batch | None = None) -> PositionMove | None:
    # The exec id is claimed first (no savepoint): a replay finds it taken and writes nothing.
    now = timezone.now()
    execution = Execution(
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
        created_at=now,
    )
    if not _claim(order, fill, execution, batch):
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


def _apply(order: Order, event: BrokerEvent, batch: _Batch | None = None) -> tuple[bool, PositionMove | None]:
    """Apply one event to its locked order; return whether it changed and the position it moved."""
    if event.kind == "accepted":
        return _accepted(order, event), None
    if event.kind == "execution" and event.fill is not None:
        move = _execution(order, event.fill, batch)
        return move is not None, move
    if event.kind in ("cancelled", "rejected", "expired"):
        return _closed(order, event), None
    if event.kind == "commission" and event.fill is not None:  # a late commission report
        if batch is not None:
            batch.flush()  # it reads the execution and re-derives the position from the database
        move = broker_reports.commission(order, event.fill)
        return move is not None, move
    if event.kind == "adopted":  # created by `orders_adopt` before the lock; now ROUTED / CANCELED
        return broker_reports.adopted(order, event), None
    log.warning("orders.broker_event_unknown_kind", kind=event.kind, order_id=str(order.id))
    return False, None


def _audit(audits: list[tuple[Order, str, PositionMove | None]]) -> None:
    """The audit rows of a batch with one INSERT: the orders', then the positions' moves."""
    entries = [audit_order_entry(order=order, actor=BROKER, action=f"order.broker_{kind}") for order, kind, _ in audits]
    entries += [position_move_audit_entry(move=move, actor=BROKER) for _, _, move in audits if move is not None]
    AuditLog.objects.bulk_create(entries)


@transaction.atomic(durable=True)
def broker_event_apply(*, event: BrokerEvent) -> Order | None:
    """Apply one broker event to its order; return the order, or None when it is unknown."""
    broker_reports.orders_adopt([event])
    try:
        order = Order.objects.select_for_update().get(id=event.order_id, account_id=event.account_id)
    except Order.DoesNotExist:
        log.warning("orders.broker_event_unknown_order", order_id=str(event.order_id), kind=event.kind)
        return None
    changed, move = _apply(order, event)
    if changed:
        _audit([(order, event.kind, move)])
        if event.kind == "execution":
            residual_guard([order])  # in flight: cancel a residual that now breaches a limit
    return order


@transaction.atomic(durable=True)
def broker_events_apply(*, events: Sequence[BrokerEvent]) -> int:
    """Apply broker events in stream order in one transaction; return how many changed an order.

    One commit for the batch instead of one per event, one INSERT of the orders' audit rows. The
    orders are locked up front in id order (as the kill switch's batches lock them), so the two
    cannot deadlock. A DomainError (a broker anomaly) rolls the whole batch back: the caller then
    applies its events one by one with `broker_event_apply`.
    """
    broker_reports.orders_adopt(events)
    ids = sorted({event.order_id for event in events})
    orders = {order.id: order for order in Order.objects.select_for_update().filter(id__in=ids).order_by("id")}
    known = [
        event for event in events if (order := orders.get(event.order_id)) and order.account_id == event.account_id
    ]
    batch = _Batch()
    batch.claim([(event.account_id, event.fill.exec_id) for event in known if event.kind == "execution" and event.fill])
    audits: list[tuple[Order, str, PositionMove | None]] = []
    # The batch's order events, outbox rows, executions and audit rows go in with one INSERT per
    # table at its end; each position moved is locked once and saved once.
    with order_writes_batched(), positions_batched():
        for event in events:
            order = orders.get(event.order_id)
            if order is None or order.account_id != event.account_id:
                log.warning("orders.broker_event_unknown_order", order_id=str(event.order_id), kind=event.kind)
                continue
            changed, move = _apply(order, event, batch)
            if changed:
                # A copy: a later event of the batch moves the order on, its audit row says where it was.
                audits.append((copy.copy(order), event.kind, move))
        batch.flush()
        _audit(audits)
    residual_guard([orders[audited.id] for audited, kind, _ in audits if kind == "execution"])
    return len(audits)
