"""The paper venue: order books per instrument, bracket legs, OCA groups and commissions. Pure.

It turns commands (as plain `PaperOrder` values) and quotes into broker events (`WireEvent`s of
`apps.brokers.ib.wire`), the same events the IB gateway reports, so the OMS cannot tell the two
apart. The fill model is `apps.brokers.matching.OrderBook`; this module adds what IB does around
it: child orders of a bracket / OTO wait until their parent has filled, an order of an OCA group
cancels the rest of its group when it fills, and commissions follow IB's per-share schedule.

Orders are keyed by our order id; a second submission of a known id is ignored (the OMS resends
commands it is not sure were delivered). `working` says what to keep of an order across a restart
of the process and `restore` takes it back (the process keeps them in Redis).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from dataclasses import replace as evolve
from datetime import datetime
from decimal import Decimal

from apps.brokers.ib.wire import WireEvent, WireFill
from apps.brokers.matching import (
    STOP_TYPES,
    CommissionSchedule,
    Done,
    DoneReason,
    Fill,
    OrderBook,
    OrderSpec,
    Quote,
    Rejected,
    Side,
    Step,
    TimeInForce,
)
from apps.brokers.matching import OrderType as MatchingType
from apps.brokers.paper.walk import Listing

ORDER_TYPES = {
    "MKT": MatchingType.MARKET,
    "LMT": MatchingType.LIMIT,
    "STP": MatchingType.STOP,
    "STP_LMT": MatchingType.STOP_LIMIT,
    "TRAIL": MatchingType.TRAIL,
    "MOC": MatchingType.MARKET_ON_CLOSE,
    "LOC": MatchingType.LIMIT_ON_CLOSE,
}
EXPIRED = frozenset({DoneReason.DAY_EXPIRED, DoneReason.GTD_EXPIRED})
COMMAND_TYPES = {engine: command for command, engine in ORDER_TYPES.items()}


@dataclass(frozen=True, slots=True)
class PaperOrder:
    """One order of a command, with the routing fields the venue needs."""

    order_id: str
    tenant_id: str
    account_id: str
    listing: Listing
    currency: str
    spec: OrderSpec
    parent_id: str | None = None
    oca_group: str | None = None
    msg_id: str = ""
    order_index: int | None = None


def order_spec(item: dict[str, object]) -> OrderSpec:
    """The matching engine's spec of one order of a command payload (`routing.order_command`)."""

    def decimal(name: str) -> Decimal | None:
        value = item.get(name)
        return None if value in (None, "") else Decimal(str(value))

    good_till = item.get("good_till")
    return OrderSpec(
        key=str(item["order_id"]),
        side=Side(str(item["side"])),
        quantity=Decimal(str(item["quantity"])),
        order_type=ORDER_TYPES[str(item["order_type"])],
        limit_price=decimal("limit_price"),
        stop_price=decimal("stop_price"),
        trailing_amount=decimal("trail_amount"),
        trailing_percent=decimal("trail_percent"),
        tif=TimeInForce(str(item["time_in_force"])),
        good_till=datetime.fromisoformat(str(good_till).replace("Z", "+00:00")) if good_till else None,
        outside_rth=bool(item.get("outside_rth")),
    )


def command_item(spec: OrderSpec) -> dict[str, object]:
    """The command fields of a spec (the inverse of `order_spec`), to keep an order across a restart."""

    def text(value: Decimal | None) -> str | None:
        return None if value is None else str(value)

    return {
        "order_id": spec.key,
        "side": spec.side.value,
        "quantity": str(spec.quantity),
        "order_type": COMMAND_TYPES[spec.order_type],
        "limit_price": text(spec.limit_price),
        "stop_price": text(spec.stop_price),
        "trail_amount": text(spec.trailing_amount),
        "trail_percent": text(spec.trailing_percent),
        "time_in_force": spec.tif.value,
        "good_till": spec.good_till.isoformat() if spec.good_till else None,
        "outside_rth": spec.outside_rth,
    }


@dataclass
class PaperVenue:
    """Every working order of the paper broker, across accounts (they share each book's liquidity)."""

    commission: CommissionSchedule = field(default_factory=CommissionSchedule)
    books: dict[str, OrderBook] = field(default_factory=dict)
    orders: dict[str, PaperOrder] = field(default_factory=dict)
    held: dict[str, list[str]] = field(default_factory=dict)  # parent id -> children waiting for its fill
    fill_counts: dict[str, int] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)  # orders whose stop triggered or trailed (no broker event)
    remember: int = 50_000  # finished orders kept (to answer a late cancel or modify precisely)

    # -- queries ---------------------------------------------------------------------------------

    def quote(self, key: str) -> Quote | None:
        book = self.books.get(key)
        return book.quote if book is not None else None

    def working_instruments(self) -> set[str]:
        return {key for key, book in self.books.items() if book.orders}

    def knows(self, order_id: str) -> bool:
        return order_id in self.orders

    def working(self, order_id: str) -> dict[str, object] | None:
        """What to keep of an order to take it back after a restart (`restore`), or None when it is done.

        The command fields, the routing fields, what it has filled and how many executions it had,
        and the parent it waits for (a held leg).
        """
        order = self.orders.get(order_id)
        if order is None:
            return None
        parent = next((parent for parent, children in self.held.items() if order_id in children), None)
        working = self.books.get(order.listing.key, OrderBook()).get(order_id)
        if parent is None and working is None:
            return None
        return {
            **command_item(order.spec),
            "tenant_id": order.tenant_id,
            "account_id": order.account_id,
            "instrument_id": order.listing.key,
            "parent_id": order.parent_id,
            "oca_group": order.oca_group,
            "msg_id": order.msg_id,
            "order_index": order.order_index,
            "filled": str(working.filled) if working else "0",
            "notional": str(working.notional) if working else "0",
            "executions": self.fill_counts.get(order_id, 0),
            "triggered": working.triggered if working else False,
            "trail_stop": str(working.trail_stop) if working and working.trail_stop is not None else None,
            "sequence": working.sequence if working else -1,
            "waits_for": parent,
        }

    # -- commands --------------------------------------------------------------------------------

    def submit(self, orders: list[PaperOrder], *, now: datetime) -> list[WireEvent]:
        """Accept new orders (a parent and its legs come together); the caller set a quote first."""
        events: list[WireEvent] = []
        fresh = [order for order in orders if order.order_id not in self.orders]
        ids = {order.order_id for order in fresh}
        for order in fresh:
            self.orders[order.order_id] = order
            events.append(self._event("accepted", order, broker_order_id=self.broker_order_id(order.order_id)))
        active = []
        for order in fresh:
            parent = self.orders.get(order.parent_id) if order.parent_id else None
            # Legs of a bracket / OTO wait for their parent; an OCO's legs share the parent's group and work at once.
            waits = parent is not None and (parent.oca_group is None or parent.oca_group != order.oca_group)
            if waits and parent is not None and (parent.order_id in ids or self._working(parent.order_id)):
                self.held.setdefault(parent.order_id, []).append(order.order_id)
            else:
                active.append(order)
        for order in active:
            events += self._to_book(order, now=now)
        self._forget_finished()
        return events

    def restore(
        self,
        order: PaperOrder,
        *,
        filled: Decimal = Decimal(0),
        notional: Decimal = Decimal(0),
        executions: int = 0,
        parent_working: bool = False,
        triggered: bool = False,
        trail_stop: Decimal | None = None,
    ) -> None:
        """Take back an order that was working before a restart (the OMS knows it: no events).

        `filled`/`notional` are what it had traded and `executions` how many fills it had, so the
        next fill's exec id (``<order id>.<n>``) follows the last one and a fill reported twice
        keeps its id. A leg whose parent is still working waits for it again; set the books'
        quotes first so that trailing stops start from the current price.
        """
        if order.order_id in self.orders:
            return
        self.orders[order.order_id] = order
        self.fill_counts[order.order_id] = executions
        if parent_working and order.parent_id:
            self.held.setdefault(order.parent_id, []).append(order.order_id)
            return
        book = self.books.get(order.listing.key, OrderBook())
        self.books[order.listing.key] = book.resume(
            order.spec, filled=filled, notional=notional, triggered=triggered, trail_stop=trail_stop
        )

    def cancel(self, order_id: str, *, now: datetime) -> list[WireEvent]:
        order = self.orders.get(order_id)
        if order is None:
            return []
        if self._is_held(order_id):
            self._unhold(order_id)
            return [self._event("cancelled", order, reason="cancelled by request")]
        book = self.books.get(order.listing.key, OrderBook())
        if book.get(order_id) is None:
            return [self._event("rejected", order, request="cancel", reason="order is not working")]
        return self._apply(order.listing.key, book.cancel(order_id, now=now), now=now)

    def modify(self, update: PaperOrder, *, now: datetime) -> list[WireEvent]:
        order = self.orders.get(update.order_id)
        if order is None:
            return [self._event("rejected", update, request="modify", reason="unknown order")]
        if self._is_held(order.order_id):
            problem = update.spec.problem()
            if problem is not None:
                return [self._event("rejected", order, request="modify", reason=problem)]
            self.orders[order.order_id] = evolve(order, spec=update.spec)
            return [self._event("accepted", order, broker_order_id=self.broker_order_id(order.order_id))]
        book = self.books.get(order.listing.key, OrderBook())
        if book.get(order.order_id) is None:
            return [self._event("rejected", order, request="modify", reason="order is not working")]
        self.orders[order.order_id] = evolve(order, spec=update.spec)
        step = book.replace(update.spec, now=now)
        if any(isinstance(event, Rejected) for event in step.events):
            self.orders[order.order_id] = order
            reason = next(event.reason for event in step.events if isinstance(event, Rejected))
            return [self._event("rejected", order, request="modify", reason=reason)]
        acknowledged = self._event("accepted", order, broker_order_id=self.broker_order_id(order.order_id))
        return [acknowledged, *self._apply(order.listing.key, step, now=now)]

    # -- market ----------------------------------------------------------------------------------

    def set_quote(self, key: str, quote: Quote, *, now: datetime) -> list[WireEvent]:
        """Take a new quote for one instrument: stops trigger, resting orders fill."""
        book = self.books.get(key, OrderBook())
        stops = {o.spec.key: (o.triggered, o.trail_stop) for o in book.orders if o.spec.order_type in STOP_TYPES}
        events = self._apply(key, book.update(quote, now=now), now=now)
        if stops:
            for order in self.books[key].orders:
                if order.spec.key in stops and stops[order.spec.key] != (order.triggered, order.trail_stop):
                    self.changed.add(order.spec.key)
        return events

    def close_auction(self, key: str, close_price: Decimal, *, now: datetime) -> list[WireEvent]:
        """The closing auction of one instrument: MOC / LOC fill, DAY orders expire."""
        book = self.books.get(key)
        if book is None:
            return []
        return self._apply(key, book.close_auction(close_price, now=now), now=now)

    def _forget_finished(self) -> None:
        """Drop the oldest finished orders once there are too many (dicts keep insertion order)."""
        if len(self.orders) <= self.remember:
            return
        working = {order.spec.key for book in self.books.values() for order in book.orders}
        waiting = {child for children in self.held.values() for child in children} | set(self.held)
        for order_id in list(self.orders)[: len(self.orders) - self.remember]:
            if order_id not in working and order_id not in waiting:
                self.orders.pop(order_id, None)
                self.fill_counts.pop(order_id, None)

    @staticmethod
    def broker_order_id(order_id: str) -> str:
        return f"PAPER-{order_id}"

    # -- internals -------------------------------------------------------------------------------

    def _working(self, order_id: str) -> bool:
        order = self.orders.get(order_id)
        return order is not None and self.books.get(order.listing.key, OrderBook()).get(order_id) is not None

    def _is_held(self, order_id: str) -> bool:
        return any(order_id in children for children in self.held.values())

    def _unhold(self, order_id: str) -> None:
        for children in self.held.values():
            if order_id in children:
                children.remove(order_id)

    def _to_book(self, order: PaperOrder, *, now: datetime) -> list[WireEvent]:
        book = self.books.get(order.listing.key, OrderBook())
        return self._apply(order.listing.key, book.submit(order.spec, now=now), now=now)

    def _apply(self, key: str, step: Step, *, now: datetime) -> list[WireEvent]:
        """Keep the step's book and turn its events into broker events (and their consequences)."""
        self.books[key] = step.book
        events: list[WireEvent] = []
        for event in step.events:
            order = self.orders.get(event.key)
            if order is None:
                continue
            if isinstance(event, Fill):
                events.append(self._execution(order, event, now=now))
                events += self._after_fill(order, event, now=now)
            elif isinstance(event, Done):
                kind = "expired" if event.reason in EXPIRED else "cancelled"
                events.append(self._event(kind, order, reason=event.reason.value.lower().replace("_", " ")))
                events += self._release_children(order, filled=False, now=now)
            elif isinstance(event, Rejected):
                events.append(self._event("rejected", order, reason=event.reason))
        return events

    def _execution(self, order: PaperOrder, fill: Fill, *, now: datetime) -> WireEvent:
        count = self.fill_counts.get(order.order_id, 0) + 1
        self.fill_counts[order.order_id] = count
        prior_quantity = fill.filled - fill.quantity
        prior_notional = fill.average_price * fill.filled - fill.quantity * fill.price
        commission = self.commission.for_fill(prior_quantity, prior_notional, fill.quantity, fill.price)
        wire_fill = WireFill(
            exec_id=f"{order.order_id}.{count}",
            quantity=fill.quantity,
            price=fill.price,
            commission=commission,
            currency=order.currency,
            executed_at=now,
        )
        return self._event("execution", order, fill=wire_fill)

    def _after_fill(self, order: PaperOrder, fill: Fill, *, now: datetime) -> list[WireEvent]:
        events: list[WireEvent] = []
        if order.oca_group:
            # One order of an OCA group trading cancels the others (IB's OCA type 1).
            for other in list(self.orders.values()):
                if other.oca_group == order.oca_group and other.order_id != order.order_id:
                    events += self._cancel_quietly(other, reason=f"OCA group {order.oca_group} filled", now=now)
        if fill.remaining <= 0:
            events += self._release_children(order, filled=True, now=now)
        return events

    def _cancel_quietly(self, order: PaperOrder, *, reason: str, now: datetime) -> list[WireEvent]:
        if self._is_held(order.order_id):
            self._unhold(order.order_id)
            return [self._event("cancelled", order, reason=reason)]
        book = self.books.get(order.listing.key, OrderBook())
        if book.get(order.order_id) is None:
            return []
        self.books[order.listing.key] = book.cancel(order.order_id, now=now).book
        return [self._event("cancelled", order, reason=reason)]

    def _release_children(self, parent: PaperOrder, *, filled: bool, now: datetime) -> list[WireEvent]:
        events: list[WireEvent] = []
        for child_id in self.held.pop(parent.order_id, []):
            child = self.orders[child_id]
            if filled:
                events += self._to_book(child, now=now)
            else:
                events.append(self._event("cancelled", child, reason="parent order did not fill"))
        return events

    @staticmethod
    def _event(
        kind: str,
        order: PaperOrder,
        *,
        broker_order_id: str = "",
        reason: str = "",
        request: str = "submit",
        fill: WireFill | None = None,
    ) -> WireEvent:
        return WireEvent(
            kind=kind,
            tenant_id=order.tenant_id,
            account_id=order.account_id,
            order_id=order.order_id,
            broker_order_id=broker_order_id,
            reason=reason,
            request=request,
            fill=fill,
            msg_id=order.msg_id,
            order_index=order.order_index,
        )
