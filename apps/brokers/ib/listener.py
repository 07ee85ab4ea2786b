"""IB's callbacks to broker events: acknowledgements, fills, cancels, rejects, and IB's errors.

ib_async's callbacks run on its loop; they only queue what happened, and one task turns the queue
into broker events in arrival order (so an order's acknowledgement is never published after its
fill by a race). What is not trusted: ib_async marks a trade Cancelled on *any* error carrying its
id (a refused modification, a cancel of a filled order), so a status that ib_async derived from
an error is ignored, and errors 103/104/10147/10148 (and any error on a live order) are answered
by looking the order up at IB. Warnings (2100-2199, 399, and the others ib_async lists) never
close an order.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from apps.brokers.ib import mapping, store
from apps.brokers.ib.context import Context, log, to_decimal
from apps.brokers.ib.models import TicketStatus
from apps.brokers.ib.reconcile import IbExecution
from apps.brokers.ib.wire import WireFill

WARNINGS = frozenset({105, 110, 165, 321, 329, 399, 404, 434, 492, 10167, 10349})
LOOKUP_ERRORS = frozenset({103, 104, 135, 161, 10147, 10148})
CONNECTIVITY = frozenset({1100, 1101, 1102})
SENT_MEMORY = 100_000  # exec ids remembered for late commission reports


def is_warning(code: int) -> bool:
    return code in WARNINGS or 2100 <= code < 2200


def synthetic_status(trade: Any) -> bool:
    """Whether ib_async made the trade's last status up from an error (it logs the error code)."""
    return bool(trade.log) and bool(getattr(trade.log[-1], "errorCode", 0))


def execution_of(fill: Any) -> IbExecution:
    """An ib_async Fill as plain data; ib_async already turned IB's time into an aware datetime."""
    execution, report = fill.execution, fill.commissionReport
    commission = to_decimal(report.commission) if report and report.execId == execution.execId else to_decimal(0)
    time = execution.time if isinstance(execution.time, datetime) else datetime.now(UTC)
    return IbExecution(
        exec_id=execution.execId,
        perm_id=int(execution.permId),
        order_ref=execution.orderRef or "",
        con_id=int(fill.contract.conId),
        symbol=fill.contract.symbol,
        side="BUY" if execution.side in ("BOT", "BUY") else "SELL",
        quantity=to_decimal(execution.shares),
        price=to_decimal(execution.price),
        commission=commission,
        currency=(report.currency if report and report.currency else fill.contract.currency) or "USD",
        time=time.astimezone(UTC),
    )


def _wire_fill(execution: IbExecution) -> WireFill:
    return WireFill(
        exec_id=execution.exec_id,
        quantity=execution.quantity,
        price=execution.price,
        commission=execution.commission,
        currency=execution.currency,
        executed_at=execution.time,
    )


class Listener:
    """Consumes ib_async events in order and publishes what they mean."""

    def __init__(self, context: Context, lookup: Callable[[store.Ticket, int, str], Awaitable[None]]) -> None:
        self.context = context
        self.lookup = lookup
        self.inbox: asyncio.Queue[tuple[str, tuple[Any, ...]]] = asyncio.Queue()
        self.on_connectivity: Callable[[int], None] = lambda code: None
        # Market data claims the errors about its own requests (their ids may equal an order id).
        self.on_request_error: Callable[[int, int, str], bool] = lambda req_id, code, text: False
        self._pending_fills: dict[str, Any] = {}
        # Exec ids this process published, with the commission they went out with: a commission
        # report for one of them (a late one) is a correction; for any other exec id it is IB
        # answering a request (reqExecutions replays every report), which reconciliation covers.
        self._sent: OrderedDict[str, Decimal] = OrderedDict()
        # permId → a ticket of that order: which order (and tenant) an execution belongs to never
        # changes, so fills of a known permId skip the lookup.
        self._owners: OrderedDict[int, store.Ticket] = OrderedDict()

    def attach(self, ib: Any) -> None:
        ib.openOrderEvent += lambda trade: self.inbox.put_nowait(("status", (trade,)))
        ib.orderStatusEvent += lambda trade: self.inbox.put_nowait(("status", (trade,)))
        ib.execDetailsEvent += self._on_exec
        ib.commissionReportEvent += self._on_commission
        ib.errorEvent += self._on_error

    def _on_commission(self, trade: Any, fill: Any, report: Any) -> None:
        exec_id = fill.execution.execId
        if exec_id in self._pending_fills or exec_id in self._sent:
            self.inbox.put_nowait(("fill", (fill,)))

    def _own(self, perm_id: int, ticket: store.Ticket) -> None:
        if perm_id:
            self._owners[perm_id] = ticket
            while len(self._owners) > SENT_MEMORY:
                self._owners.popitem(last=False)

    def _remember(self, exec_id: str, commission: Decimal) -> None:
        self._sent[exec_id] = commission
        self._sent.move_to_end(exec_id)
        while len(self._sent) > SENT_MEMORY:
            self._sent.popitem(last=False)

    def mine(self, account: str) -> bool:
        """Whether IB's account field names this listener's account (a login can serve several)."""
        return not account or account == self.context.config.account_code

    def _on_exec(self, trade: Any, fill: Any) -> None:
        if not self.mine(fill.execution.acctNumber):
            return
        # The commission report follows its execution; wait a moment for it, then go without.
        exec_id = fill.execution.execId
        self._pending_fills[exec_id] = fill
        asyncio.get_running_loop().call_later(
            self.context.config.commission_grace, lambda: self.inbox.put_nowait(("fill", (fill,)))
        )

    def _on_error(self, req_id: int, code: int, text: str, contract: Any = None) -> None:
        if code in CONNECTIVITY:
            self.on_connectivity(code)
            return
        if req_id > 0 and self.on_request_error(req_id, code, text):
            return
        if is_warning(code) and code != 110:
            log.info("ib.warning %s (id %s): %s", code, req_id, text)
            return
        self.inbox.put_nowait(("error", (req_id, code, text)))

    async def run(self) -> None:
        while True:
            kind, args = await self.inbox.get()
            try:
                if kind == "status":
                    await self.status(*args)
                elif kind == "fill":
                    await self.fill(*args)
                elif kind == "error":
                    await self.error(*args)
            except Exception:
                log.exception("ib.callback_failed (%s)", kind)

    async def _ticket(self, *, ib_order_id: int = 0, perm_id: int = 0, order_ref: str = "") -> store.Ticket | None:
        config = self.context.config
        return await self.context.db(
            store.ticket_find,
            account_id=config.account_id,
            client_id=config.client_id,
            ib_order_id=ib_order_id,
            perm_id=perm_id,
            order_ref=order_ref,
        )

    async def update_ticket(self, ticket: store.Ticket, **values: Any) -> None:
        await self.context.db(
            store.ticket_update, account_id=self.context.config.account_id, order_id=ticket.order_id, **values
        )

    async def publish_about(self, kind: str, ticket: store.Ticket, **values: Any) -> None:
        event = self.context.event(kind, order_id=ticket.order_id, tenant_id=ticket.tenant_id, **values)
        await self.context.publish(event)

    # -- order status --------------------------------------------------------------------------

    async def status(self, trade: Any) -> None:
        if synthetic_status(trade) or not self.mine(trade.order.account):
            return
        order, status = trade.order, trade.orderStatus
        own = order.clientId in (0, self.context.config.client_id)
        perm_id = int(order.permId or status.permId or 0)
        ticket = await self._ticket(
            ib_order_id=order.orderId if own else 0, perm_id=perm_id, order_ref=order.orderRef or ""
        )
        if ticket is None:
            return
        await self.bind(ticket, perm_id, status.status)
        if status.status in mapping.CANCELLED_STATUSES and not ticket.terminal:
            await self.closed(ticket, "cancelled", "cancelled at IB")
        elif status.status == mapping.FILLED_STATUS and not ticket.terminal:
            await self.update_ticket(ticket, status=TicketStatus.FILLED, ib_status=status.status, pending="")
        elif status.status == mapping.INACTIVE_STATUS and not ticket.terminal:
            await self.lookup(ticket, 0, "IB reports the order Inactive")

    async def bind(self, ticket: store.Ticket, perm_id: int, ib_status: str) -> None:
        """Record IB's acknowledgement (permId) once; acknowledge a pending modification."""
        if not perm_id:
            return
        acknowledged = ticket.status == TicketStatus.SUBMITTING or ticket.perm_id != perm_id
        modified = ticket.pending == "modify" and ib_status in ("Submitted", "PreSubmitted")
        if not acknowledged and not modified:
            return
        values: dict[str, Any] = {"perm_id": perm_id, "ib_status": ib_status}
        if ticket.status == TicketStatus.SUBMITTING:
            values["status"] = TicketStatus.WORKING
        if modified:
            values["pending"] = ""
        # Published first (the OMS sees the order ROUTED sooner), recorded second: a crash in
        # between leaves the ticket unbound, and reconciliation binds it and publishes again,
        # which the applier absorbs.
        await self.publish_about("accepted", ticket, broker_order_id=str(perm_id))
        await self.update_ticket(ticket, **values)
        self._own(perm_id, ticket)

    async def closed(self, ticket: store.Ticket, kind: str, reason: str, *, request: str = "submit") -> None:
        status = {"cancelled": TicketStatus.CANCELLED, "rejected": TicketStatus.REJECTED}.get(
            kind, TicketStatus.EXPIRED
        )
        await self.update_ticket(ticket, status=status, pending="", reason=reason[:500])
        await self.publish_about(kind, ticket, reason=reason, request=request)

    # -- fills ---------------------------------------------------------------------------------

    async def fill(self, fill: Any) -> None:
        # Whichever comes first (the commission report, or the end of the grace period) publishes;
        # the journal makes the second a no-op. A commission report that comes after the fill was
        # published without it (however late) goes out as a correction, once. The fill stays
        # pending until it is remembered as sent, so that a report arriving meanwhile is queued.
        execution = execution_of(fill)
        try:
            sent = self._sent.get(execution.exec_id)
            if sent is None and await self.publish_fill(execution):
                return
            if execution.commission and execution.commission != sent:
                await self.publish_commission(execution)
        finally:
            self._pending_fills.pop(execution.exec_id, None)

    async def publish_commission(self, execution: IbExecution) -> bool:
        """Send a late commission for a published execution (by exec id); False if nothing changed."""
        context = self.context
        config = context.config
        order_id = await context.db(
            store.execution_commission,
            account_id=config.account_id,
            exec_id=execution.exec_id,
            commission=execution.commission,
        )
        if order_id is None:
            return False
        ticket = await context.db(store.ticket_get, account_id=config.account_id, order_id=order_id)
        if ticket is None:
            return False
        log.info("ib.late_commission %s: %s", execution.exec_id, execution.commission)
        await self.publish_about("commission", ticket, fill=_wire_fill(execution))
        self._remember(execution.exec_id, execution.commission)
        return True

    async def publish_fills(self, executions: list[IbExecution]) -> int:
        """Publish a batch of executions (a reconciliation's backfill): one query for what is
        booked, one for the tickets, one pipelined publish, one bulk journal write."""
        context = self.context
        config = context.config
        if not executions:
            return 0
        booked = await context.db(
            store.executions_booked_among, account_id=config.account_id, exec_ids=[e.exec_id for e in executions]
        )
        fresh = [e for e in executions if e.exec_id not in booked]
        tickets = await context.db(
            store.tickets_for_executions,
            account_id=config.account_id,
            perm_ids=sorted({e.perm_id for e in fresh}),
            refs=sorted({e.order_ref for e in fresh if e.order_ref}),
        )
        by_perm = {t.perm_id: t for t in tickets if t.perm_id}
        by_ref = {t.client_order_id: t for t in tickets}
        events, rows = [], []
        for execution in fresh:
            ticket = by_perm.get(execution.perm_id) or by_ref.get(execution.order_ref)
            if ticket is None:
                log.warning("ib.unknown_execution %s (perm %s)", execution.exec_id, execution.perm_id)
                continue
            events.append(
                context.event(
                    "execution",
                    order_id=ticket.order_id,
                    tenant_id=ticket.tenant_id,
                    fill=_wire_fill(execution),
                    broker_order_id=str(execution.perm_id),
                )
            )
            rows.append((execution, ticket.order_id))
        # Published first, journaled second (as for one fill).
        await context.publish_many(events)
        await context.db(store.executions_record_many, account_id=config.account_id, rows=rows)
        for execution, _ in rows:
            self._remember(execution.exec_id, execution.commission)
        return len(rows)

    async def publish_fill(self, execution: IbExecution) -> bool:
        """Publish an execution once (journal-checked), then journal it; False if already booked."""
        context = self.context
        config = context.config
        if await context.db(store.execution_booked, account_id=config.account_id, exec_id=execution.exec_id):
            return False
        ticket = self._owners.get(execution.perm_id) or await self._ticket(
            perm_id=execution.perm_id, order_ref=execution.order_ref
        )
        if ticket is None:
            log.warning("ib.unknown_execution %s (perm %s)", execution.exec_id, execution.perm_id)
            return False
        self._own(execution.perm_id, ticket)
        fill = _wire_fill(execution)
        # Published first, journaled second: a crash in between publishes it again, which the
        # applier absorbs (exec ids are unique); the other order would lose the fill.
        await self.publish_about("execution", ticket, fill=fill, broker_order_id=str(execution.perm_id))
        await context.db(
            store.execution_record, account_id=config.account_id, execution=execution, order_id=ticket.order_id
        )
        self._remember(execution.exec_id, execution.commission)
        return True

    # -- errors --------------------------------------------------------------------------------

    async def error(self, req_id: int, code: int, text: str) -> None:
        if req_id <= 0:
            log.warning("ib.error %s: %s", code, text)
            return
        ticket = await self._ticket(ib_order_id=req_id)
        if ticket is None:
            log.info("ib.error %s for id %s (not an order of ours): %s", code, req_id, text)
            return
        reason = f"IB error {code}: {text}"
        if code == 202:
            if not ticket.terminal:
                await self.closed(ticket, "cancelled", text or "cancelled")
        elif code == 201:
            if ticket.pending == "modify" and ticket.status != TicketStatus.SUBMITTING:
                await self.update_ticket(ticket, pending="")
                await self.publish_about("rejected", ticket, request="modify", reason=text)
            elif not ticket.terminal:
                await self.closed(ticket, "rejected", text)
        elif code in LOOKUP_ERRORS or ticket.status != TicketStatus.SUBMITTING:
            await self.lookup(ticket, code, text)
        elif not ticket.terminal:
            # An error on an order IB never acknowledged: it was refused at placement.
            await self.closed(ticket, "rejected", reason)
