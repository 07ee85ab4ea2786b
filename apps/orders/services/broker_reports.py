"""Broker reports that are not a plain step of an order the OMS placed: late commissions, and
orders adopted from IB.

- `commission`: IB's commission report of an execution came after the execution was applied
  (without it). The execution's commission is set (by exec id; the same report again changes
  nothing) and the position re-derived, in the applier's transaction.
- `adopted`: reconciliation found an order at IB the OMS did not place (TWS, another client id).
  `orders_adopt` creates it (state NEW, `metadata.origin = "ADOPTED"`, IB's ids in
  `metadata.ib`) before the applier locks its batch, under the id the gateway gave it (stable per
  account and permId: adopting again finds it); the `adopted` event then moves it to ROUTED, or
  CANCELED when IB had cancelled it, and its fills follow as ordinary executions.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import structlog
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.brokers.models import BrokerAccount, Instrument
from apps.common.context import Actor
from apps.orders.models import Execution, ExecutionKey, Order, OrderType, TimeInForce
from apps.orders.services.lifecycle import order_move, publish, record_event
from apps.orders.state import OrderState
from apps.portfolio.corrections import position_commission_correct
from apps.portfolio.services import ExecutionData, PositionMove

if TYPE_CHECKING:
    from apps.orders.services.broker_events import BrokerEvent, Fill

log = structlog.get_logger(__name__)
BROKER = Actor.system("broker")
ADOPTED = "ADOPTED"
CANCELLED_AT_IB = frozenset({"Cancelled", "ApiCancelled"})


def _decimal(value: str | None) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def _adopt_one(event: BrokerEvent) -> Order | None:
    details: dict[str, Any] = dict(event.details or {})
    if Order.objects.filter(id=event.order_id).exists():
        return None
    account = BrokerAccount.objects.filter(id=event.account_id).first()
    con_id = int(details.get("con_id") or 0)
    instrument = Instrument.objects.filter(con_id=con_id).first() if con_id else None
    quantity = _decimal(details.get("quantity"))
    order_type = details.get("order_type", "")
    if account is None or instrument is None or not quantity or order_type not in OrderType.values:
        log.warning("orders.adoption_impossible", order_id=str(event.order_id), details=details)
        return None
    tif = details.get("time_in_force", "DAY")
    perm_id = details.get("perm_id", event.broker_order_id)
    reference = details.get("client_order_id") or f"ib-{perm_id}"
    if Order.objects.filter(tenant_id=account.tenant_id, client_order_id=reference).exists():
        reference = f"ib-{perm_id}"
    now = timezone.now()
    order = Order(
        id=event.order_id,
        tenant_id=account.tenant_id,
        account=account,
        instrument=instrument,
        symbol=instrument.symbol,
        client_order_id=reference,
        broker_order_id=event.broker_order_id,
        side=details.get("side", "BUY"),
        quantity=quantity,
        order_type=order_type,
        limit_price=_decimal(details.get("limit_price")),
        stop_price=_decimal(details.get("stop_price")),
        trail_amount=_decimal(details.get("trail_amount")),
        trail_percent=_decimal(details.get("trail_percent")),
        time_in_force=tif if tif in TimeInForce.values else TimeInForce.DAY,
        outside_rth=details.get("outside_rth") == "true",
        metadata={
            "origin": ADOPTED,
            "adopted": True,
            "ib": {
                "perm_id": perm_id,
                "client_id": details.get("ib_client_id", ""),
                "order_id": details.get("ib_order_id", ""),
                "order_ref": details.get("client_order_id", ""),
                "status": details.get("ib_status", ""),
            },
        },
        created_at=now,
        updated_at=now,
    )
    try:
        with transaction.atomic():
            order.save(force_insert=True)
    except IntegrityError:
        log.info("orders.adoption_replayed", order_id=str(event.order_id))
        return None
    record_event(order, kind="ADOPTED", from_state="", actor=BROKER, detail={"reason": event.reason, "ib": details})
    publish(order, kind="order.created")
    return order


def orders_adopt(events: Iterable[BrokerEvent]) -> int:
    """Create the orders of `adopted` events (NEW; the event itself then moves them); return how many."""
    return sum(_adopt_one(event) is not None for event in events if event.kind == "adopted")


def adopted(order: Order, event: BrokerEvent) -> bool:
    """Move a just-adopted order to where IB has it: ROUTED, or CANCELED; False if done before."""
    if OrderState(order.state) != OrderState.NEW or not (order.metadata or {}).get("adopted"):
        return False
    status = (event.details or {}).get("ib_status", "")
    target = OrderState.CANCELED if status in CANCELLED_AT_IB else OrderState.ROUTED
    order_move(order=order, to=target, actor=BROKER, reason=event.reason or "adopted from the broker")
    return True


def commission(order: Order, fill: Fill) -> PositionMove | None:
    """Apply a commission reported after its execution; None when it changes nothing."""
    key = ExecutionKey.objects.filter(account_id=order.account_id, broker_exec_id=fill.exec_id).first()
    if key is None:
        log.warning("orders.commission_unknown_execution", exec_id=fill.exec_id, order_id=str(order.id))
        return None
    execution = Execution.objects.select_for_update().filter(id=key.execution_id).first()
    if execution is None or execution.commission == fill.commission:
        return None
    delta = fill.commission - execution.commission
    execution.commission = fill.commission
    execution.save(update_fields=["commission"])
    siblings = Order.objects.filter(account_id=order.account_id, instrument_id=order.instrument_id)
    rows = Execution.objects.filter(order_id__in=siblings.values("id")).order_by("created_at", "id")
    sides = dict(siblings.values_list("id", "side"))
    history = [
        ExecutionData(
            account_id=order.account_id,
            instrument_id=order.instrument_id,
            exec_id=row.broker_exec_id,
            side=sides.get(row.order_id, row.side),
            quantity=row.quantity,
            price=row.price,
            commission=row.commission,
            executed_at=row.executed_at,
        )
        for row in rows
    ]
    corrected = ExecutionData(
        account_id=order.account_id,
        instrument_id=order.instrument_id,
        exec_id=fill.exec_id,
        side=execution.side,
        quantity=execution.quantity,
        price=execution.price,
        commission=fill.commission,
        executed_at=execution.executed_at,
    )
    return position_commission_correct(tenant_id=order.tenant_id, execution=corrected, delta=delta, history=history)
