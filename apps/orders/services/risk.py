"""Orders' side of risk: the order book risk reads, the risk call of placing and modifying, and
carrying out the cancellations of an engaged kill switch.

Risk sits below orders and never reads the order tables; `order_book` is the provider it calls
(registered at start-up for `/risk/status`, handed in directly when placing). The kill switch is
recorded by risk and announced on `ev.risk`; `kill_switch_enforce` cancels what it covers
through the same locked cancel path as `POST /orders/{id}/cancel`, in batches, and sends one
global cancel per IB account when the whole account is covered.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import partial
from uuid import UUID

import structlog
from django.db import transaction
from django.db.models import Q

from apps.brokers.models import BrokerAccount, Instrument
from apps.common.context import Actor
from apps.orders import validation
from apps.orders.models import Order
from apps.orders.services import routing
from apps.orders.services.lifecycle import audit_order, order_move
from apps.orders.state import OPEN, OrderState, cancel_target
from apps.risk.services import (
    Book,
    BookOrder,
    BookQuery,
    Evaluation,
    OrderSpec,
    kill_switch_cancellations,
    kill_switch_cancelled,
    pretrade_evaluate,
)
from apps.tenants.models import Tenant

log = structlog.get_logger(__name__)
KILL_SWITCH = Actor.system("kill-switch")
OPEN_STATES = [state.value for state in OPEN]
BATCH = 100


def order_book(query: BookQuery) -> Book:
    """The account's open orders (plus the tenant's in the instrument) and its recent submissions.

    One query (placements call it while holding the account lock): the working orders through
    the partial index `order_tenant_working`, OR the account's orders created since `since`.
    """
    tenant_id = query.tenant_id
    if tenant_id is None:
        tenant_id = BrokerAccount.objects.filter(id=query.account_id).values_list("tenant_id", flat=True).first()
    scope = Q(account_id=query.account_id)
    if query.instrument_id is not None:
        scope |= Q(instrument_id=query.instrument_id)
    working = Q(scope, tenant_id=tenant_id, state__in=OPEN_STATES)
    recent = Q(account_id=query.account_id, created_at__gt=query.since, parent__isnull=True)
    rows = Order.objects.filter(working | recent).values_list(
        "id",
        "account_id",
        "instrument_id",
        "side",
        "order_type",
        "quantity",
        "filled_quantity",
        "limit_price",
        "strategy_id",
        "state",
        "created_at",
        "parent_id",
    )
    open_orders: list[BookOrder] = []
    submissions: list[datetime] = []
    for oid, aid, iid, side, kind, qty, filled, price, strategy, state, created_at, parent_id in rows:
        if state in OPEN_STATES and (aid == query.account_id or iid == query.instrument_id):
            open_orders.append(BookOrder(oid, aid, iid, side, kind, qty - filled, price, strategy))
        if aid == query.account_id and created_at > query.since and parent_id is None:
            submissions.append(created_at)
    return Book(open_orders=tuple(open_orders), submissions=tuple(submissions))


def risk_spec(
    *,
    instrument: Instrument,
    side: str,
    quantity: Decimal,
    order_type: str,
    limit_price: Decimal | None,
    stop_price: Decimal | None,
    strategy_id: UUID | None,
    outside_rth: bool = False,
    replaces: UUID | None = None,
) -> OrderSpec:
    return OrderSpec(
        instrument=instrument,
        side=side,
        quantity=quantity,
        order_type=order_type,
        limit_price=limit_price,
        stop_price=stop_price,
        strategy_id=strategy_id,
        outside_rth=outside_rth,
        replaces=replaces,
    )


def order_risk(
    *,
    tenant: Tenant,
    account: BrokerAccount,
    instrument: Instrument,
    fields: validation.OrderFields,
    strategy_id: UUID | None,
    outside_rth: bool,
    lock: bool,
) -> Evaluation:
    """Run the risk gates and compliance rules for a new order (`lock`: placing; raises the refusal)."""
    spec = risk_spec(
        instrument=instrument,
        side=fields.side,
        quantity=fields.quantity,
        order_type=fields.order_type,
        limit_price=fields.limit_price,
        stop_price=fields.stop_price,
        strategy_id=strategy_id,
        outside_rth=outside_rth,
    )
    return pretrade_evaluate(tenant=tenant, account=account, order=spec, book=order_book, lock=lock)


def order_modify_risk(*, order: Order, values: dict[str, Decimal | None]) -> None:
    """Run the gates for a modification (inside its transaction): the order with its new values
    replaces itself in the book; raises the refusal."""
    merged = {name: getattr(order, name) for name in ("quantity", "limit_price", "stop_price")} | values
    spec = risk_spec(
        instrument=order.instrument,
        side=order.side,
        quantity=(merged["quantity"] or order.quantity) - order.filled_quantity,
        order_type=order.order_type,
        limit_price=merged["limit_price"],
        stop_price=merged["stop_price"],
        strategy_id=order.strategy_id,
        outside_rth=order.outside_rth,
        replaces=order.id,
    )
    pretrade_evaluate(tenant=order.tenant, account=order.account, order=spec, book=order_book, lock=True)


def _cancel_batch(order_ids: list[UUID]) -> int:
    """Cancel one batch of orders (locked in id order), each with its event, outbox row and audit row."""
    cancelled = []
    with transaction.atomic(durable=True):
        orders = Order.objects.select_for_update(of=("self",)).select_related("instrument").filter(id__in=order_ids)
        for order in orders.order_by("id"):
            target = cancel_target(OrderState(order.state))
            if target is None or order.state == OrderState.PENDING_CANCEL:
                continue
            order_move(order=order, to=target, actor=KILL_SWITCH, reason="kill switch")
            cancelled.append(order)
        by_account: dict[UUID, list[Order]] = {}
        for order in cancelled:
            if order.state == OrderState.PENDING_CANCEL:
                by_account.setdefault(order.account_id, []).append(order)
        for account_id, orders_of_account in by_account.items():
            payload = routing.command_payload(orders_of_account, con_id=None)
            transaction.on_commit(partial(routing.send, account_id=account_id, kind="oms.cancel", payload=payload))
        for order in cancelled:
            audit_order(order=order, actor=KILL_SWITCH, action="order.cancel")
    return len(cancelled)


def kill_switch_enforce(*, kill_switch_id: UUID) -> int:
    """Cancel every working order an engaged kill switch covers; return how many were cancelled.

    Idempotent: orders already cancelled or pending cancel are skipped, so a redelivered event or
    the periodic sweep does no harm. A released switch cancels nothing.
    """
    plan = kill_switch_cancellations(kill_switch_id=kill_switch_id)
    if not plan.active:
        return 0
    orders = Order.objects.filter(tenant_id=plan.tenant_id, state__in=OPEN_STATES)
    if plan.strategy_id is not None:
        orders = orders.filter(strategy_id=plan.strategy_id)
    else:
        orders = orders.filter(account_id__in=plan.account_ids or ())
    ids = list(orders.exclude(state=OrderState.PENDING_CANCEL).order_by("id").values_list("id", flat=True))
    total = sum(_cancel_batch(ids[start : start + BATCH]) for start in range(0, len(ids), BATCH))
    # IB: one global cancel per wholly covered account also catches what IB has that we lost track of.
    for account_id in plan.global_cancel_accounts:
        payload = {
            "msg_id": f"ks-{plan.kill_switch_id.hex}",
            "tenant_id": str(plan.tenant_id),
            "account_id": str(account_id),
            "orders": [],
            "all": True,
        }
        routing.send(account_id=account_id, kind="oms.cancel", payload=payload)
    if total:
        kill_switch_cancelled(kill_switch_id=kill_switch_id, count=total)
    log.info("orders.kill_switch_enforced", kill_switch_id=str(kill_switch_id), cancelled=total)
    return total
