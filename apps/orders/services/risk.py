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

import orjson
import structlog
from django.db import transaction

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
from apps.risk.services.inflight import residual_breach, residual_breach_record, residual_limits_exist
from apps.risk.services.pretrade import SqlBook
from apps.tenants.models import Tenant

log = structlog.get_logger(__name__)
KILL_SWITCH = Actor.system("kill-switch")
RESIDUAL_RISK = Actor.system("risk-residual")
OPEN_STATES = [state.value for state in OPEN]
_OPEN_IN = ", ".join(["%s"] * len(OPEN_STATES))
_BOOK_COLUMNS = (
    "id, account_id, instrument_id, side, order_type, quantity::text, filled_quantity::text, limit_price::text,"
    " strategy_id, state, created_at, parent_id"
)
_ACCOUNTS = BrokerAccount._meta.db_table
BATCH = 100


def _book_sql(query: BookQuery, *, exclude: tuple[UUID, ...] = ()) -> tuple[str, list[object]]:
    """The book as a scalar subquery returning a JSON array of rows (decimals as text).

    Working orders through the partial index `order_tenant_working`, OR the account's orders
    created since `since`. `exclude`: the orders being placed, already written by the placing
    transaction. Only constants of this module are formatted into it; every value is a parameter.
    """
    tenant = "%s" if query.tenant_id is not None else f"(SELECT tenant_id FROM {_ACCOUNTS} WHERE id = %s)"  # noqa: S608
    tenant_param: object = query.tenant_id if query.tenant_id is not None else query.account_id
    scope = "account_id = %s OR instrument_id = %s" if query.instrument_id is not None else "account_id = %s"
    params: list[object] = [query.account_id] + ([query.instrument_id] if query.instrument_id is not None else [])
    sql = (
        f"SELECT coalesce(json_agg(json_build_array({_BOOK_COLUMNS})), '[]') FROM orders_order"  # noqa: S608
        f" WHERE ((({scope}) AND tenant_id = {tenant} AND state IN ({_OPEN_IN}))"
        " OR (account_id = %s AND created_at > %s AND parent_id IS NULL))"
    )
    params += [tenant_param, *OPEN_STATES, query.account_id, query.since]
    if exclude:
        sql += f" AND NOT (id IN ({', '.join(['%s'] * len(exclude))}))"
        params += list(exclude)
    return sql, params


def _book_parse(text: str, query: BookQuery) -> Book:
    account_id, instrument_id = str(query.account_id), str(query.instrument_id) if query.instrument_id else None
    open_orders: list[BookOrder] = []
    submissions: list[datetime] = []
    for oid, aid, iid, side, kind, qty, filled, price, strategy, state, created, parent_id in orjson.loads(text):
        if state in OPEN_STATES and (aid == account_id or iid == instrument_id):
            open_orders.append(
                BookOrder(
                    UUID(oid),
                    UUID(aid),
                    UUID(iid),
                    side,
                    kind,
                    Decimal(qty) - Decimal(filled),
                    Decimal(price) if price is not None else None,
                    UUID(strategy) if strategy else None,
                )
            )
        if aid == account_id and parent_id is None:
            created_at = datetime.fromisoformat(created)
            if created_at > query.since:
                submissions.append(created_at)
    return Book(open_orders=tuple(open_orders), submissions=tuple(submissions))


def placing_book(*, exclude: tuple[UUID, ...] = ()) -> SqlBook:
    """The book provider of placements: read in the locked snapshot's one statement."""
    return SqlBook(sql=partial(_book_sql, exclude=exclude), parse=_book_parse)


def order_book(query: BookQuery, *, exclude: tuple[UUID, ...] = ()) -> Book:
    """The account's open orders (plus the tenant's in the instrument) and its recent submissions."""
    return placing_book(exclude=exclude)(query)


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
    placing: tuple[UUID, ...] = (),
) -> Evaluation:
    """Run the risk gates and compliance rules for a new order (`lock`: placing; raises the refusal).

    `placing`: the ids of the order (and legs) already written by the placing transaction, which
    the book leaves out (the order being evaluated is the candidate, not a working order)."""
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
    return pretrade_evaluate(tenant=tenant, account=account, order=spec, book=placing_book(exclude=placing), lock=lock)


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
    pretrade_evaluate(tenant=order.tenant, account=order.account, order=spec, book=placing_book(), lock=True)


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


def residual_guard(orders: list[Order]) -> int:
    """After fills (inside the applier's transaction): cancel the rest of each partly filled order
    whose residual now breaches a limit, with the reason on the order event, an audit row and a
    `risk.breached` event. Orders that filled completely (or closed) cost nothing."""
    cancelled = 0
    for order in {order.id: order for order in orders if order.state == OrderState.PARTIALLY_FILLED}.values():
        if not residual_limits_exist(tenant_id=order.tenant_id):
            continue
        residual = order.quantity - order.filled_quantity
        spec = risk_spec(
            instrument=order.instrument,
            side=order.side,
            quantity=residual,
            order_type=order.order_type,
            limit_price=order.limit_price,
            stop_price=order.stop_price,
            strategy_id=order.strategy_id,
        )
        check = residual_breach(account=order.account, order_id=order.id, residual=spec, book=order_book)
        if check is None:
            continue
        reason = f"residual of {residual.normalize():f} cancelled by risk: {check.detail}"
        detail = {"gate": check.gate, "limit_id": check.limit_id, "limit_version": check.limit_version}
        order_move(order=order, to=OrderState.PENDING_CANCEL, actor=RESIDUAL_RISK, reason=reason, detail=detail)
        payload = routing.command_payload([order], con_id=order.instrument.con_id)
        transaction.on_commit(partial(routing.send, account_id=order.account_id, kind="oms.cancel", payload=payload))
        audit_order(order=order, actor=RESIDUAL_RISK, action="order.cancel")
        residual_breach_record(
            tenant_id=order.tenant_id,
            account_id=order.account_id,
            order_id=order.id,
            residual=residual,
            check=check,
            actor=RESIDUAL_RISK,
        )
        log.info("orders.residual_cancelled", order_id=str(order.id), gate=check.gate, limit_id=check.limit_id)
        cancelled += 1
    return cancelled
