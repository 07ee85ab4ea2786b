"""Reconciliation against IB: gather IB's view, diff it with ours, act, and record the run.

Runs on every (re)connect before any new command is taken, on a schedule, on request (a manual
run claimed from the database), and, for one order, when IB answers with an error whose meaning
depends on the order's real state (103/104/10147/10148, or Inactive).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from ib_async import ExecutionFilter

from apps.brokers.ib import mapping, reconcile, store
from apps.brokers.ib.context import Context, log, to_decimal
from apps.brokers.ib.listener import Listener, execution_of
from apps.brokers.ib.mapping import spec_from_command
from apps.brokers.ib.models import RunTrigger, TicketStatus
from apps.brokers.ib.reconcile import Action, IbOrder
from apps.brokers.ib.router import Router, ib_order

CURSOR_SLACK = timedelta(minutes=5)


UNSET = 1e300  # ib_async's UNSET_DOUBLE (and anything near it) means "no value"


def _price(value: Any) -> Decimal | None:
    if value is None or value != value or abs(float(value)) >= UNSET or float(value) == 0:
        return None
    return to_decimal(value)


def adoption_details(order: Any) -> dict[str, str]:
    """An IB order in OMS terms, as strings, for adopting it; {"unmapped": why} if it has none."""
    try:
        ours = mapping.from_ib(
            mapping.IbOrderFields(
                action=order.action,
                total_quantity=to_decimal(order.totalQuantity),
                order_type=order.orderType,
                tif=order.tif or "DAY",
                order_ref=order.orderRef or "",
                lmt_price=_price(order.lmtPrice),
                aux_price=_price(order.auxPrice),
                trailing_percent=_price(getattr(order, "trailingPercent", None)),
                outside_rth=bool(order.outsideRth),
            )
        )
    except mapping.Unmapped as exc:
        return {"unmapped": exc.reason}
    details = {
        "order_type": ours.order_type,
        "time_in_force": ours.time_in_force,
        "outside_rth": "true" if ours.outside_rth else "false",
    }
    for name in ("limit_price", "stop_price", "trail_amount", "trail_percent"):
        value = getattr(ours, name)
        if value is not None:
            details[name] = str(value)
    return details


def ib_order_of(trade: Any, *, open_: bool) -> IbOrder:
    order, status = trade.order, trade.orderStatus
    filled = status.filled or getattr(order, "filledQuantity", 0) or 0
    return IbOrder(
        perm_id=int(order.permId or status.permId or 0),
        order_ref=order.orderRef or "",
        con_id=int(trade.contract.conId or 0),
        side=order.action,
        quantity=to_decimal(order.totalQuantity),
        filled=to_decimal(filled if filled != float("inf") else 0),
        status=status.status,
        open=open_,
        client_id=int(order.clientId or 0),
        order_id=int(order.orderId or 0),
        symbol=trade.contract.symbol,
        details=adoption_details(order),
    )


class Sync:
    """Reconciliation runs for one gateway."""

    def __init__(self, context: Context, router: Router, listener: Listener) -> None:
        self.context, self.router, self.listener = context, router, listener

    async def fetch(self) -> tuple[list[IbOrder], list[reconcile.IbExecution], dict[int, Decimal]]:
        """IB's view: open and completed orders, executions since our cursor, positions."""
        context = self.context
        ib, config, timeout = context.ib, context.config, context.config.request_timeout
        open_trades = await context.pacer.request(ib.reqOpenOrdersAsync, timeout=timeout)
        completed = await context.pacer.request(lambda: ib.reqCompletedOrdersAsync(False), timeout=timeout)
        cursor = await context.db(store.execution_cursor, account_id=config.account_id)
        since = (cursor - CURSOR_SLACK).strftime("%Y%m%d-%H:%M:%S") if cursor else ""
        fills = await context.pacer.request(
            lambda: ib.reqExecutionsAsync(ExecutionFilter(acctCode=config.account_code, time=since)), timeout=timeout
        )
        positions = await context.pacer.request(ib.reqPositionsAsync, timeout=timeout)
        code = config.account_code
        # One IB login may serve several accounts (and client 0 sees them all): ours only.
        open_trades = [t for t in open_trades if (t.order.account or code) == code]
        completed = [t for t in completed if (t.order.account or code) == code]
        orders = [ib_order_of(trade, open_=True) for trade in open_trades]
        known = {order.perm_id for order in orders}
        orders += [ib_order_of(t, open_=False) for t in completed if int(t.order.permId or 0) not in known]
        account_orders = [o for o in orders if o.perm_id]
        executions = [execution_of(fill) for fill in fills if fill.execution.acctNumber in ("", config.account_code)]
        held: dict[int, Decimal] = defaultdict(Decimal)
        for position in positions:
            if position.account == config.account_code:
                held[int(position.contract.conId)] += to_decimal(position.position)
        return account_orders, executions, dict(held)

    async def run(self, trigger: RunTrigger, *, run_id: UUID | None = None) -> UUID:
        """One full reconciliation, recorded as a run with every drift and its resolution."""
        context = self.context
        config = context.config
        run_id = run_id or await context.db(store.run_start, account_id=config.account_id, trigger=trigger)
        try:
            ib_orders, executions, positions = await self.fetch()
            tickets = await context.db(store.ticket_list, account_id=config.account_id)
            booked = await context.db(store.executions_booked, account_id=config.account_id)
            ib_orders = await self._adoptable(ib_orders, tickets)
            ours = [
                reconcile.OurOrder(
                    order_id=t.order_id,
                    client_order_id=t.client_order_id,
                    con_id=t.con_id,
                    side=t.side,
                    quantity=t.quantity,
                    filled=t.filled,
                    perm_id=t.perm_id,
                    # Sent in this session and not acknowledged yet: in flight, left alone.
                    terminal=t.terminal or t.order_id in self.router.session_sent,
                    outcome_unknown=t.status == TicketStatus.SUBMITTING and t.order_id not in self.router.session_sent,
                )
                for t in tickets
            ]
            plan = reconcile.diff(
                ours=ours,
                booked=booked,
                ib_orders=ib_orders,
                ib_executions=executions,
                ib_positions=positions,
                account_id=str(config.account_id),
            )
            await self.apply(plan, {t.order_id: t for t in tickets}, ib_orders, executions)
        except Exception as exc:
            log.exception("ib.reconciliation_failed")
            await context.db(
                store.run_finish, run_id=run_id, drifts=[], summary={}, error=f"{type(exc).__name__}: {exc}"
            )
            raise
        summary = {
            "ib_orders": len(ib_orders),
            "ib_executions": len(executions),
            "our_orders": len(ours),
            "matched_open": plan.matched,
            "fills_published": len(plan.of(Action.PUBLISH_FILL)),
            "adopted": len(plan.of(Action.ADOPT)),
            "positions": {str(con_id): str(quantity) for con_id, quantity in positions.items()},
        }
        await context.db(store.run_finish, run_id=run_id, drifts=reconcile.recorded(plan.drifts), summary=summary)
        log.info("ib.reconciled %s: %d drift(s)", trigger, len(plan.drifts))
        return run_id

    async def _adoptable(self, ib_orders: list[IbOrder], tickets: list[store.Ticket]) -> list[IbOrder]:
        """Mark the orders no ticket knows whose instrument the OMS does not list (not adoptable)."""
        known_perm = {t.perm_id for t in tickets if t.perm_id}
        known_ref = {t.client_order_id for t in tickets}
        strangers = {o.perm_id for o in ib_orders if o.perm_id not in known_perm and o.order_ref not in known_ref}
        if not strangers:
            return ib_orders
        con_ids = sorted({o.con_id for o in ib_orders if o.perm_id in strangers})
        listed = await self.context.db(store.instruments_known, con_ids=con_ids)
        return [
            replace(o, details={"unmapped": f"conId {o.con_id} ({o.symbol}) is not an OMS instrument"})
            if o.perm_id in strangers and o.con_id not in listed and "unmapped" not in o.details
            else o
            for o in ib_orders
        ]

    async def apply(
        self,
        plan: reconcile.Plan,
        tickets: dict[str, store.Ticket],
        ib_orders: list[IbOrder],
        executions: Sequence[reconcile.IbExecution] = (),
    ) -> None:
        listener = self.listener
        by_perm = {order.perm_id: order for order in ib_orders}
        for drift in plan.of(Action.ADOPT):
            if drift.adopt is not None and drift.order_id:
                await self.adopt(drift.adopt, drift.order_id)
        for drift in plan.of(Action.PUBLISH_ACCEPTED):
            ticket = tickets[drift.order_id or ""]
            await listener.bind(ticket, drift.perm_id or 0, by_perm[drift.perm_id or 0].status)
        await listener.publish_fills([d.execution for d in plan.of(Action.PUBLISH_FILL) if d.execution is not None])
        late = {e.exec_id: e for e in executions}
        for drift in plan.of(Action.PUBLISH_COMMISSION):
            execution = late.get(drift.ib.get("exec_id", ""))
            if execution is not None:
                await listener.publish_commission(execution)
        for drift in plan.of(Action.PUBLISH_CANCELLED):
            await listener.closed(tickets[drift.order_id or ""], "cancelled", "cancelled at IB while we were away")
        # Orders IB finished with fills (the fills themselves are published above).
        for ticket in tickets.values():
            at_ib = by_perm.get(ticket.perm_id or 0)
            if at_ib is not None and at_ib.status == mapping.FILLED_STATUS and not ticket.terminal:
                await self.context.db(
                    store.ticket_update,
                    account_id=self.context.config.account_id,
                    order_id=ticket.order_id,
                    status=TicketStatus.FILLED,
                    pending="",
                )
        await self.resend([tickets[d.order_id or ""] for d in plan.of(Action.RESEND)])

    async def adopt(self, order: IbOrder, order_id: str) -> None:
        """Take over an order placed outside the OMS: a ticket (so IB's callbacks and fills find
        it), then an `adopted` broker event from which the applier creates the OMS order."""
        context = self.context
        config = context.config
        if order.status in mapping.CANCELLED_STATUSES:
            status = TicketStatus.CANCELLED
        elif order.status == mapping.FILLED_STATUS:
            status = TicketStatus.FILLED
        else:
            status = TicketStatus.WORKING if order.open else TicketStatus.EXPIRED
        created = await context.db(
            store.ticket_adopt,
            account_id=config.account_id,
            tenant_id=config.tenant_id,
            order=order,
            order_id=order_id,
            status=status,
        )
        if not created:
            return
        details = dict(order.details) | {
            "con_id": str(order.con_id),
            "symbol": order.symbol,
            "side": order.side,
            "quantity": str(order.quantity),
            "client_order_id": order.order_ref,
            "perm_id": str(order.perm_id),
            "ib_client_id": str(order.client_id),
            "ib_order_id": str(order.order_id),
            "ib_status": order.status,
        }
        event = context.event(
            "adopted",
            order_id=order_id,
            tenant_id=str(config.tenant_id),
            broker_order_id=str(order.perm_id),
            details=details,
            reason=f"adopted from IB (placed outside the OMS, client id {order.client_id})",
        )
        log.warning("ib.adopted perm %s (client %s) as order %s", order.perm_id, order.client_id, order_id)
        await context.publish(event)

    async def resend(self, tickets: list[store.Ticket]) -> None:
        """Send again the orders IB never received, each under a freshly leased id (parents first)."""
        context = self.context
        config = context.config
        new_ids: dict[str, int] = {}
        ordered = sorted(tickets, key=lambda t: t.parent_order_id is not None)
        children = {t.order_id: [c for c in ordered if c.parent_order_id == t.order_id] for t in ordered}
        for ticket in ordered:
            fresh = await context.db(
                store.ticket_resend,
                account_id=config.account_id,
                order_id=ticket.order_id,
                login=config.login,
                client_id=config.client_id,
            )
            new_ids[ticket.order_id] = fresh.ib_order_id
            spec = spec_from_command(ticket.spec)
            fields = mapping.to_ib(spec)
            if spec.oca_group:
                fields = replace(fields, oca_group=spec.oca_group, oca_type=mapping.OCA_CANCEL_WITH_BLOCK)
            parent_id, transmit = 0, True
            if ticket.parent_order_id is None:
                transmit = not children[ticket.order_id]
            else:
                parent = await context.db(
                    store.ticket_get, account_id=config.account_id, order_id=ticket.parent_order_id
                )
                oco = bool(spec.oca_group) and parent is not None and parent.spec.get("oca_group") == spec.oca_group
                if not oco:
                    parent_id = new_ids.get(ticket.parent_order_id) or (parent.ib_order_id if parent else 0)
                    group = children.get(ticket.parent_order_id)
                    transmit = group is None or ticket is group[-1]
            fields = replace(fields, transmit=transmit)
            order = ib_order(fields, order_id=fresh.ib_order_id, account=config.account_code, parent_id=parent_id)
            log.warning("ib.resend %s as id %s (IB never received it)", ticket.client_order_id, fresh.ib_order_id)
            self.router.send_new(spec, order)

    async def order(self, ticket: store.Ticket, code: int, text: str) -> None:
        """Resolve one order against IB's real state after an ambiguous error."""
        ib_orders, executions, _ = await self.fetch()
        listener = self.listener
        at_ib = next(
            (
                o
                for o in ib_orders
                if (ticket.perm_id and o.perm_id == ticket.perm_id) or o.order_ref == ticket.client_order_id
            ),
            None,
        )
        for execution in executions:
            if execution.perm_id == (at_ib.perm_id if at_ib else -1) or execution.order_ref == ticket.client_order_id:
                await listener.publish_fill(execution)
        fresh = await self.context.db(
            store.ticket_get, account_id=self.context.config.account_id, order_id=ticket.order_id
        )
        ticket = fresh or ticket
        reason = f"IB error {code}: {text}" if code else text
        if at_ib is not None and mapping.is_working(at_ib.status):
            await listener.bind(ticket, at_ib.perm_id, at_ib.status)
            if ticket.pending in ("cancel", "modify"):
                await listener.update_ticket(ticket, pending="")
                await listener.publish_about(
                    "rejected", ticket, request=ticket.pending, reason=f"{reason}; the order still works at IB"
                )
        elif at_ib is not None and at_ib.status in mapping.CANCELLED_STATUSES:
            if not ticket.terminal:
                await listener.closed(ticket, "cancelled", f"cancelled at IB ({reason})")
        elif at_ib is not None and at_ib.status == mapping.FILLED_STATUS:
            await listener.update_ticket(ticket, status=TicketStatus.FILLED, pending="", perm_id=at_ib.perm_id)
            if ticket.pending in ("cancel", "modify"):
                await listener.publish_about(
                    "rejected", ticket, request=ticket.pending, reason=f"{reason}; already filled"
                )
        elif at_ib is None and ticket.status == TicketStatus.SUBMITTING and code == 103 and ticket.sends < 3:
            # The id collided with one IB had seen (nextValidId went backwards): a fresh lease.
            await self.resend([ticket])
        elif at_ib is None and not ticket.terminal:
            kind = "rejected" if ticket.status == TicketStatus.SUBMITTING else "cancelled"
            await listener.closed(ticket, kind, f"IB does not know the order ({reason})")
