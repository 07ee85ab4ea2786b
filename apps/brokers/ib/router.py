"""Commands to IB: submit (with brackets and OCA groups), modify, cancel, and cancel-all.

Every send goes through the pacer. A submission writes its tickets (leased order ids, status
SUBMITTING) before anything leaves, so a crash leaves a trace to resolve by orderRef instead of a
guess. A cancel that overtakes its own order in the pacer queue (cancels jump the queue) stops
that order from being sent at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import orjson
from ib_async import Contract, Order

from apps.brokers.ib import mapping, store
from apps.brokers.ib.context import Context, log
from apps.brokers.ib.mapping import IbOrderFields, OrderSpec, Unmapped
from apps.brokers.ib.models import TicketStatus
from apps.brokers.ib.pacing import Priority
from apps.events.commands import EnvelopeRejected, envelope_verify


def contract_for(con_id: int | None, symbol: str) -> Contract:
    if con_id:
        return Contract(conId=con_id, exchange="SMART")
    return Contract(symbol=symbol, secType="STK", exchange="SMART", currency="USD")


def ib_order(fields: IbOrderFields, *, order_id: int, account: str, parent_id: int = 0) -> Order:
    """The ib_async `Order` for mapped fields (floats only here, at the wire)."""
    order = Order(
        orderId=order_id,
        action=fields.action,
        totalQuantity=float(fields.total_quantity),
        orderType=fields.order_type,
        tif=fields.tif,
        orderRef=fields.order_ref,
        account=account,
        outsideRth=fields.outside_rth,
        goodTillDate=fields.good_till_date,
        ocaGroup=fields.oca_group,
        ocaType=fields.oca_type,
        transmit=fields.transmit,
        parentId=parent_id,
    )
    if fields.lmt_price is not None:
        order.lmtPrice = float(fields.lmt_price)
    if fields.aux_price is not None:
        order.auxPrice = float(fields.aux_price)
    if fields.trailing_percent is not None:
        order.trailingPercent = float(fields.trailing_percent)
    return order


class Router:
    """Turns verified commands into paced IB calls."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.unsent: dict[str, bool] = {}  # order id → cancelled before its send came up
        self.session_sent: set[str] = set()  # sent in this session: in flight, not "unknown"

    # -- commands ------------------------------------------------------------------------------

    async def handle_entry(self, fields: Mapping[str, str], *, redelivered: bool) -> None:
        """Verify and act on one command stream entry."""
        try:
            envelope = orjson.loads(fields.get("envelope", "{}"))
            payload = envelope_verify(envelope, client=self.context.redis)
        except EnvelopeRejected as rejected:
            envelope = orjson.loads(fields.get("envelope", "{}")) if fields.get("envelope") else {}
            # A redelivered entry (we crashed before acking it) has a recorded nonce and may be
            # old; its signature still decides. Tickets make acting on it again harmless.
            if redelivered and (rejected.reason == "replayed nonce" or rejected.reason.startswith("stale")):
                payload = dict(envelope.get("payload") or {})
            else:
                await self._refused(envelope, rejected.reason)
                return
        except orjson.JSONDecodeError:
            log.error("ib.command_malformed")
            return
        kind = envelope.get("kind")
        if str(payload.get("account_id", "")) != str(self.context.config.account_id):
            log.error("ib.command_wrong_account: %s", payload.get("account_id"))
            return
        orders = list(payload.get("orders") or [])
        if kind == "oms.submit":
            await self.submit(orders, msg_id=str(payload.get("msg_id", "")))
        elif kind == "oms.cancel":
            if payload.get("all"):
                await self.cancel_all()
            for item in orders:
                await self.cancel(str(item["order_id"]), tenant_id=str(item.get("tenant_id", "")))
        elif kind == "oms.modify":
            for item in orders:
                await self.modify(item)

    async def _refused(self, envelope: Mapping[str, Any], reason: str) -> None:
        """A command we must not act on. Submits are left to the OMS's resend of NEW orders;
        a pending cancel or modification is answered, so that the order does not hang."""
        kind = envelope.get("kind")
        payload = envelope.get("payload") or {}
        log.warning("ib.command_refused: %s (%s)", reason, kind)
        if reason == "bad signature" or kind not in ("oms.cancel", "oms.modify"):
            return
        request = "cancel" if kind == "oms.cancel" else "modify"
        for item in payload.get("orders") or []:
            event = self.context.event(
                "rejected",
                order_id=str(item["order_id"]),
                tenant_id=str(item.get("tenant_id", "")),
                request=request,
                reason=f"{request} not sent to IB: command refused ({reason}); send it again",
            )
            await self.context.publish(event)

    # -- submit ------------------------------------------------------------------------------

    async def submit(self, items: Sequence[Mapping[str, Any]], *, msg_id: str = "") -> None:
        context = self.context
        try:
            specs = [mapping.spec_from_command(item) for item in items]
            planned = mapping.plan_submission(specs)
        except (Unmapped, KeyError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, Unmapped) else f"malformed order: {exc}"
            for item in items:
                if item.get("order_id"):
                    event = context.event(
                        "rejected",
                        order_id=str(item["order_id"]),
                        tenant_id=str(item.get("tenant_id", "")),
                        reason=f"refused before IB: {reason}",
                        msg_id=msg_id,
                        order_index=int(item.get("order_index") or 0),
                    )
                    await context.publish(event)
            return
        config = context.config
        tickets = await context.db(
            store.tickets_open,
            account_id=config.account_id,
            login=config.login,
            client_id=config.client_id,
            specs=[(spec, dict(item)) for spec, item in zip(specs, items, strict=True)],
        )
        if tickets is None:
            log.info("ib.submit_known: %s already has a ticket; not sent again", specs[0].client_order_id)
            return
        ids = [ticket.ib_order_id for ticket in tickets]
        for spec, fields, ticket in zip(specs, planned, tickets, strict=True):
            parent_id = ids[fields.parent_index] if fields.parent_index is not None else 0
            order = ib_order(fields, order_id=ticket.ib_order_id, account=config.account_code, parent_id=parent_id)
            self.send_new(spec, order)

    def send_new(self, spec: OrderSpec, order: Order) -> None:
        """Queue a placeOrder for a ticketed order (not awaited: cancels may overtake it)."""
        context = self.context
        self.unsent[spec.order_id] = False
        self.session_sent.add(spec.order_id)
        contract = contract_for(spec.con_id, spec.symbol)

        def place() -> None:
            if self.unsent.pop(spec.order_id, False):
                return  # a cancel overtook it: never sent
            context.ib.placeOrder(contract, order)

        done = context.pacer.submit(place, Priority.ORDER)
        done.add_done_callback(lambda future: self._after_send(spec, future))

    def _after_send(self, spec: OrderSpec, future: Any) -> None:
        if future.cancelled() or future.exception() is not None:
            log.error("ib.send_failed: %s %s", spec.client_order_id, None if future.cancelled() else future.exception())

    # -- cancel --------------------------------------------------------------------------------

    async def cancel(self, order_id: str, *, tenant_id: str) -> None:
        context = self.context
        config = context.config
        ticket = await context.db(store.ticket_get, account_id=config.account_id, order_id=order_id)
        if ticket is None:
            event = context.event("cancelled", order_id=order_id, tenant_id=tenant_id, reason="never sent to IB")
            await context.publish(event)
            return
        if order_id in self.unsent:
            self.unsent[order_id] = True
            await self._cancelled_unsent(ticket)
            return
        if ticket.terminal:
            await self._answer_closed(ticket, request="cancel")
            return
        if await self._foreign(ticket, request="cancel"):
            return
        await context.db(store.ticket_update, account_id=config.account_id, order_id=order_id, pending="cancel")
        await context.pacer.send(lambda: context.ib.client.cancelOrder(ticket.ib_order_id, ""), Priority.CANCEL)

    async def cancel_all(self) -> int:
        """Cancel every working order of this account (the kill switch's global cancel, per account).

        IB's reqGlobalCancel would also cancel the orders of every other account of the login,
        so each of our working orders gets its own cancel, all ahead of any queued order.
        """
        context = self.context
        held = list(self.unsent)
        for order_id in held:  # at once: none of them may leave while the cancels are written
            self.unsent[order_id] = True
        tickets = await context.db(store.ticket_list, account_id=context.config.account_id, open_only=True)
        for ticket in tickets:
            if ticket.order_id in held:
                await self._cancelled_unsent(ticket)
            else:
                await self.cancel(ticket.order_id, tenant_id=ticket.tenant_id)
        return len(tickets)

    async def _cancelled_unsent(self, ticket: store.Ticket) -> None:
        """An order cancelled while still in the pacer queue: never sent, cancelled at once."""
        context = self.context
        await context.db(
            store.ticket_update,
            account_id=context.config.account_id,
            order_id=ticket.order_id,
            status=TicketStatus.CANCELLED,
        )
        reason = "cancelled before it was sent to IB"
        event = context.event("cancelled", order_id=ticket.order_id, tenant_id=ticket.tenant_id, reason=reason)
        await context.publish(event)

    async def _foreign(self, ticket: store.Ticket, *, request: str) -> bool:
        """An adopted order another API client placed: IB lets only that client change it (its
        order id is that client's), so the request is refused rather than sent under our id."""
        if ticket.ib_client_id == self.context.config.client_id:
            return False
        reason = (
            f"{request} not possible through the OMS: the order was placed at IB by client id "
            f"{ticket.ib_client_id} (adopted); {request} it from that client or TWS"
        )
        event = self.context.event(
            "rejected", order_id=ticket.order_id, tenant_id=ticket.tenant_id, request=request, reason=reason
        )
        await self.context.publish(event)
        return True

    async def _answer_closed(self, ticket: store.Ticket, *, request: str) -> None:
        """A cancel / modification of an order IB has already closed: say what it became."""
        kind = {TicketStatus.CANCELLED: "cancelled", TicketStatus.EXPIRED: "expired"}.get(
            TicketStatus(ticket.status), "rejected"
        )
        reason = f"{request} not possible: the order is {ticket.status} at IB"
        event = self.context.event(
            kind, order_id=ticket.order_id, tenant_id=ticket.tenant_id, request=request, reason=reason
        )
        await self.context.publish(event)

    # -- modify --------------------------------------------------------------------------------

    async def modify(self, item: Mapping[str, Any]) -> None:
        """Send the order again under its own order id (IB's modification), new values in."""
        context = self.context
        config = context.config
        order_id = str(item["order_id"])
        ticket = await context.db(store.ticket_get, account_id=config.account_id, order_id=order_id)
        tenant_id = str(item.get("tenant_id", ""))
        if ticket is None or order_id in self.unsent:
            reason = "modify not possible: the order has not reached IB yet; try again"
            event = context.event("rejected", order_id=order_id, tenant_id=tenant_id, request="modify", reason=reason)
            await context.publish(event)
            return
        if ticket.terminal:
            await self._answer_closed(ticket, request="modify")
            return
        if await self._foreign(ticket, request="modify"):
            return
        try:
            spec = mapping.spec_from_command(item)
            fields = mapping.to_ib(spec)
        except Unmapped as exc:
            event = context.event(
                "rejected", order_id=order_id, tenant_id=tenant_id, request="modify", reason=f"refused: {exc.reason}"
            )
            await context.publish(event)
            return
        if spec.oca_group:  # a modification must keep the order in its OCA group
            fields = replace(fields, oca_group=spec.oca_group, oca_type=mapping.OCA_CANCEL_WITH_BLOCK)
        parent_id = 0
        if ticket.parent_order_id:
            parent = await context.db(store.ticket_get, account_id=config.account_id, order_id=ticket.parent_order_id)
            parent_id = parent.ib_order_id if parent is not None else 0
        stored = dict(ticket.spec) | {key: item.get(key) for key in ("quantity", "limit_price", "stop_price")}
        stored |= {key: item.get(key) for key in ("trail_amount", "trail_percent")}
        await context.db(
            store.ticket_update,
            account_id=config.account_id,
            order_id=order_id,
            pending="modify",
            quantity=spec.quantity,
            spec=stored,
        )
        order = ib_order(
            fields,
            order_id=ticket.ib_order_id,
            account=config.account_code,
            parent_id=parent_id,
        )
        contract = contract_for(ticket.con_id, ticket.symbol)
        # The client-level call: ib_async's placeOrder asserts on a trade it wrongly marked done.
        await context.pacer.send(lambda: context.ib.client.placeOrder(ticket.ib_order_id, contract, order))
