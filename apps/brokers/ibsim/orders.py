"""The simulated broker: IB's order rules around the pure fill model.

`Broker` owns the `BrokerState`, one `matching.OrderBook` per instrument and the current quotes.
It applies IB's rules (order ids per client, 103/104/200/201/202/10147/10148, brackets and OCA
groups, transmit flags, whatIf), books fills into positions and cash, and tells a `Notifier` what
to say to the clients; the notifier (the server) decides who hears it and encodes the frames.
It runs on the simulator's event loop only, so it needs no locks.

The order in which a fill is announced is IB's: execDetails, then openOrder + orderStatus, then
commissionReport (the `commission_first` fault swaps the first and last), then positions and
account updates.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace as evolve
from datetime import datetime, timedelta
from decimal import Decimal

from apps.brokers import matching
from apps.brokers.ibsim import accounts
from apps.brokers.ibsim.catalogue import Catalogue, ContractQuery, Instrument
from apps.brokers.ibsim.clock import Schedule, SimClock
from apps.brokers.ibsim.faults import Faults
from apps.brokers.ibsim.interfaces import Notifier, OrderRejected, PlaceRequest, parse_ib_time
from apps.brokers.ibsim.prices import PriceModel
from apps.brokers.ibsim.state import (
    CANCELLED,
    FILLED,
    PENDING_SUBMIT,
    PRE_SUBMITTED,
    SUBMITTED,
    BrokerState,
    SimExecution,
    SimOrder,
)

logger = logging.getLogger(__name__)
ZERO = Decimal(0)
MAX_STEPS_PER_ADVANCE = 2_000

SUPPORTED_TYPES = {t.value: t for t in matching.OrderType}
SUPPORTED_TIFS = {t.value: t for t in matching.TimeInForce}
LIQUIDITY_CODES = {matching.Liquidity.ADDED: 1, matching.Liquidity.REMOVED: 2, matching.Liquidity.AUCTION: 1}


class Broker:
    """IB's order handling, matching and books for every account of one simulated login."""

    def __init__(
        self,
        *,
        state: BrokerState,
        catalogue: Catalogue,
        clock: SimClock,
        schedule: Schedule,
        prices: PriceModel,
        faults: Faults,
        commissions: matching.CommissionSchedule | None = None,
        tick_seconds: float = 1.0,
        exec_prefix: int = 0xE0D5,
    ) -> None:
        self.state = state
        self.catalogue = catalogue
        self.clock = clock
        self.schedule = schedule
        self.prices = prices
        self.faults = faults
        self.commissions = commissions or matching.CommissionSchedule()
        self.tick = timedelta(seconds=tick_seconds)
        self.exec_prefix = exec_prefix
        self.quotes: dict[int, matching.Quote] = {}
        self.books: dict[int, matching.OrderBook] = {}
        self.notifier: Notifier | None = None
        self.last_step = clock.now()
        self.dirty = False
        self._rebuild_books()

    # -- quotes ------------------------------------------------------------------------------

    def quote(self, con_id: int) -> matching.Quote:
        """The current quote of an instrument, starting its price path on first use."""
        quote = self.quotes.get(con_id)
        if quote is None:
            instrument = self._instrument(con_id)
            quote = self.prices.initial(instrument, self.clock.now())
            self.quotes[con_id] = quote
            self.books[con_id] = self._book(con_id).update(quote, now=self.clock.now()).book
        return quote

    def mark(self, con_id: int) -> Decimal:
        return self.quote(con_id).last

    def set_quote(self, con_id: int, quote: matching.Quote) -> None:
        """Replace the quote of an instrument now (the control API's set_price) and match."""
        self._apply_quote(con_id, quote, self.clock.now())

    def advance_to(self, now: datetime) -> None:
        """Step every started price path on the tick grid up to `now`, running session closes."""
        if now <= self.last_step:
            return
        cursor = self.last_step
        for close in [*self.schedule.closes_between(cursor, now), None]:
            target = close or now
            steps = int((target - cursor) / self.tick)
            if steps > MAX_STEPS_PER_ADVANCE:
                # A long jump (say, over a weekend) needs the end state, not every tick.
                cursor = target - self.tick * MAX_STEPS_PER_ADVANCE
                steps = MAX_STEPS_PER_ADVANCE
            for _ in range(steps):
                cursor += self.tick
                self._step_prices(cursor)
            if close is not None:
                self._close_auction(close)
                cursor = close
        self.last_step = now

    def _step_prices(self, at: datetime) -> None:
        if self.faults.backend_down:
            return  # no market data and no matching while IB's backend is unreachable
        for con_id, previous in list(self.quotes.items()):
            quote = self.prices.step(self._instrument(con_id), previous, at)
            self._apply_quote(con_id, quote, at)

    def _apply_quote(self, con_id: int, quote: matching.Quote, at: datetime) -> None:
        self.quotes[con_id] = quote
        book = self._book(con_id)
        if self.faults.auto_match and not self.faults.backend_down:
            step = book.update(quote, now=at, session_open=self.schedule.is_open(at))
            self.books[con_id] = step.book
            self._apply(step.events, at)
        else:
            self.books[con_id] = evolve(book, quote=quote, bid_available=quote.bid_size, ask_available=quote.ask_size)
        if self.notifier:
            self.notifier.quote_changed(con_id, quote)

    def _close_auction(self, at: datetime) -> None:
        for con_id, book in list(self.books.items()):
            if not book.orders:
                continue
            step = book.close_auction(self.mark(con_id), now=at)
            self.books[con_id] = step.book
            self._apply(step.events, at)

    # -- order requests ----------------------------------------------------------------------

    def place(self, client_id: int, request: PlaceRequest) -> None:
        """Handle a placeOrder: a new order, a modification, or a whatIf question."""
        try:
            self._place(client_id, request)
        except OrderRejected as rejected:
            self._error(client_id, request.order_id, rejected.code, rejected.message)

    def _place(self, client_id: int, request: PlaceRequest) -> None:
        existing = self.state.order_for(client_id, request.order_id)
        if existing is not None and not request.what_if:
            self._modify(existing, request)
            return
        last = self.state.last_order_ids.get(client_id, 0)
        if request.order_id <= last and not request.what_if:
            raise OrderRejected(103, f"Duplicate order id {request.order_id}")
        self.state.last_order_ids[client_id] = max(last, request.order_id)
        if self.faults.rejections and not request.what_if:
            rejection = self.faults.rejections.popleft()
            raise OrderRejected(rejection.code, rejection.reason)
        order = self._new_order(client_id, request)
        if request.what_if:
            self._answer_what_if(order)
            return
        self._check_buying_power(order)
        self.state.add_order(order)
        self.dirty = True
        if request.transmit:
            self._transmit(order)

    def _new_order(self, client_id: int, request: PlaceRequest) -> SimOrder:
        instrument = self.resolve(request.contract)
        account = request.account or (next(iter(self.state.accounts)) if len(self.state.accounts) == 1 else "")
        if not account:
            raise OrderRejected(436, "You must specify an allocation (either a single account, group, or profile).")
        if account not in self.state.accounts:
            raise OrderRejected(201, f"Order rejected - reason:Invalid account code {account}")
        if request.action not in ("BUY", "SELL"):
            raise OrderRejected(201, f"Order rejected - reason:Invalid side {request.action!r}")
        parent_perm_id = 0
        if request.parent_id:
            parent = self.state.order_for(client_id, request.parent_id)
            if parent is None or parent.is_done:
                raise OrderRejected(201, f"Order rejected - reason:Parent order {request.parent_id} is not working")
            parent_perm_id = parent.perm_id
        order = SimOrder(
            perm_id=0 if request.what_if else self.state.new_perm_id(),
            client_id=client_id,
            order_id=request.order_id,
            account=account,
            con_id=instrument.con_id,
            action=request.action,
            quantity=request.quantity,
            order_type=request.order_type.upper(),
            limit_price=request.limit_price,
            aux_price=request.aux_price,
            tif=(request.tif or "DAY").upper(),
            created_at=self.clock.now(),
            oca_group=request.oca_group,
            oca_type=request.oca_type,
            order_ref=request.order_ref,
            parent_id=request.parent_id,
            parent_perm_id=parent_perm_id,
            transmit=request.transmit,
            outside_rth=request.outside_rth,
            good_till_date=request.good_till_date,
            good_after_time=request.good_after_time,
            trailing_percent=request.trailing_percent,
            trail_stop_price=request.trail_stop_price,
            exchange=request.contract.exchange or "SMART",
        )
        self._check_prices(order, instrument)
        problem = self.spec(order).problem()
        if problem:
            raise OrderRejected(201, f"Order rejected - reason:{problem}")
        return order

    def resolve(self, contract: ContractQuery) -> Instrument:
        """The one instrument a contract describes, or error 200 as IB answers."""
        found = self.catalogue.lookup(contract)
        if not found:
            raise OrderRejected(200, "No security definition has been found for the request")
        if len(found) > 1:
            raise OrderRejected(200, f"The contract description specified for {contract.describe()} is ambiguous.")
        return found[0]

    def _check_prices(self, order: SimOrder, instrument: Instrument) -> None:
        if order.order_type not in SUPPORTED_TYPES:
            raise OrderRejected(387, f"Unsupported order type {order.order_type}")
        if order.tif not in SUPPORTED_TIFS:
            raise OrderRejected(201, f"Order rejected - reason:Unsupported time in force {order.tif}")
        for price in (order.limit_price, order.aux_price if order.order_type != "TRAIL" else None):
            if price is not None and price > 0 and price != instrument.round_to_tick(price):
                # IB checks prices against the contract's market rule and refuses the order.
                raise OrderRejected(110, "The price does not conform to the minimum price variation for this contract.")

    def _check_buying_power(self, order: SimOrder) -> None:
        position = self.state.positions.get((order.account, order.con_id))
        held = position.quantity if position else ZERO
        signed = order.quantity if order.action == "BUY" else -order.quantity
        increase = max(abs(held + signed) - abs(held), ZERO)
        if not increase:
            return
        quote = self.quote(order.con_id)
        price = order.limit_price or (quote.ask if order.action == "BUY" else quote.bid)
        snap = accounts.snapshot(self.state, order.account, self.mark)
        needed = increase * price
        available = snap.buying_power - snap.gross_position_value
        if needed > available:
            raise OrderRejected(
                201,
                "Order rejected - reason:YOUR ORDER IS NOT ACCEPTED. IN ORDER TO OBTAIN THE DESIRED POSITION YOUR "
                f"EQUITY WITH LOAN VALUE [{snap.net_liquidation:.2f} USD] MUST EXCEED THE INITIAL MARGIN "
                f"[{(snap.init_margin + needed / order_leverage(snap)):.2f} USD]",
            )

    def _answer_what_if(self, order: SimOrder) -> None:
        snap = accounts.snapshot(self.state, order.account, self.mark)
        quote = self.quote(order.con_id)
        price = order.limit_price or (quote.ask if order.action == "BUY" else quote.bid)
        change = order.quantity * price / order_leverage(snap)
        margins = {
            "initMarginBefore": snap.init_margin,
            "maintMarginBefore": snap.maint_margin,
            "equityWithLoanBefore": snap.net_liquidation,
            "initMarginChange": change,
            "maintMarginChange": change * Decimal("0.75"),
            "equityWithLoanChange": ZERO,
            "initMarginAfter": snap.init_margin + change,
            "maintMarginAfter": snap.maint_margin + change * Decimal("0.75"),
            "equityWithLoanAfter": snap.net_liquidation,
        }
        commission = self.commissions.order_total(order.quantity, order.quantity * price)
        order.status = PRE_SUBMITTED
        if self.notifier:
            self.notifier.what_if(order, {k: f"{v:.2f}" for k, v in margins.items()}, commission)

    def _modify(self, order: SimOrder, request: PlaceRequest) -> None:
        if order.is_done:
            raise OrderRejected(104, f"Cannot modify a filled order. Order {order.order_id} is {order.status}.")
        instrument = self.resolve(request.contract)
        if instrument.con_id != order.con_id:
            raise OrderRejected(201, "Order rejected - reason:The contract of an order cannot be modified")
        previous = (order.quantity, order.limit_price, order.aux_price, order.tif, order.order_type)
        order.quantity = request.quantity
        order.limit_price = request.limit_price
        order.aux_price = request.aux_price
        order.tif = (request.tif or order.tif).upper()
        order.order_type = request.order_type.upper()
        order.outside_rth = request.outside_rth
        order.good_till_date = request.good_till_date
        order.trailing_percent = request.trailing_percent
        order.trail_stop_price = request.trail_stop_price
        order.order_ref = request.order_ref
        problem = self.spec(order).problem()
        if problem is None and order.quantity <= order.filled:
            problem = f"new quantity {order.quantity} does not exceed the filled {order.filled}"
        if problem is not None:
            order.quantity, order.limit_price, order.aux_price, order.tif, order.order_type = previous
            raise OrderRejected(201, f"Order rejected - reason:{problem}")
        self.dirty = True
        if order.status == PENDING_SUBMIT:
            if request.transmit:
                self._transmit(order)
            return
        book = self._book(order.con_id)
        if book.get(order.key) is None:
            # Held (a bracket child waiting for its parent): only the ticket changes.
            self._announce(order)
            return
        now = self.clock.now()
        session_open = self.schedule.is_open(now)
        order.status = SUBMITTED if session_open or order.outside_rth else PRE_SUBMITTED
        self._announce(order)
        step = book.replace(self.spec(order), now=now, session_open=session_open, halted=self._halted())
        self.books[order.con_id] = step.book
        self._apply(step.events, now)

    def cancel(self, client_id: int, order_id: int) -> None:
        """Handle cancelOrder: 202 + Cancelled, or 10147 / 10148."""
        order = self.state.order_for(client_id, order_id)
        if order is None:
            self._error(client_id, order_id, 10147, f"OrderId {order_id} that needs to be cancelled is not found.")
            return
        active = self._book(order.con_id).get(order.key) is not None
        if not order.is_done and self.faults.late_fill_on_cancel and active:
            # The fill was already on its way when the cancel arrived: it still happened.
            quote = self.quote(order.con_id)
            quantity = min(self.faults.late_fill_quantity or order.remaining, order.remaining)
            self.force_fill(order.perm_id, quantity, quote.ask if order.action == "BUY" else quote.bid)
        if order.is_done:
            self._error(
                client_id,
                order_id,
                10148,
                f"OrderId {order_id} that needs to be cancelled cannot be cancelled, state: {order.status}.",
            )
            return
        self._cancel(order, announce_error=True)

    def global_cancel(self) -> None:
        """Handle reqGlobalCancel: cancel every working order of every client."""
        for order in list(self.state.orders.values()):
            if not order.is_done:
                self._cancel(order, announce_error=True)

    def force_fill(self, perm_id: int, quantity: Decimal | None = None, price: Decimal | None = None) -> None:
        """Fill a working order now, whatever the market says (the control API's fill)."""
        order = self.state.orders.get(perm_id)
        if order is None or order.is_done:
            raise ValueError(f"order {perm_id} is not working")
        book = self._book(order.con_id)
        if book.get(order.key) is None:
            raise ValueError(f"order {perm_id} is not active (held or not transmitted)")
        quote = self.quote(order.con_id)
        price = price if price is not None else (quote.ask if order.action == "BUY" else quote.bid)
        now = self.clock.now()
        step = book.force_fill(order.key, quantity or order.remaining, price, now=now)
        self.books[order.con_id] = step.book
        self._apply(step.events, now)

    # -- lifecycle ---------------------------------------------------------------------------

    def _transmit(self, order: SimOrder) -> None:
        """Send an order (and the untransmitted family it completes) to the market."""
        if order.parent_perm_id:
            parent = self.state.orders[order.parent_perm_id]
            if parent.status == PENDING_SUBMIT:
                self._transmit(parent)
                return  # transmitting the parent transmits its children
        self._activate(order)
        for child in self._children(order):
            if child.status == PENDING_SUBMIT:
                self._activate(child)

    def _activate(self, order: SimOrder) -> None:
        if order.parent_perm_id and self.state.orders[order.parent_perm_id].status != FILLED:
            # Bracket children wait (PreSubmitted) until their parent has filled.
            order.status = PRE_SUBMITTED
            self._announce(order)
            return
        now = self.clock.now()
        session_open = self.schedule.is_open(now)
        held = not session_open and not order.outside_rth
        order.status = PRE_SUBMITTED if held else SUBMITTED
        self._announce(order)
        self.quote(order.con_id)
        step = self._book(order.con_id).submit(
            self.spec(order), now=now, session_open=session_open, halted=self._halted()
        )
        self.books[order.con_id] = step.book
        self._apply(step.events, now)

    def _children(self, order: SimOrder) -> list[SimOrder]:
        return [self.state.orders[p] for p in self.state.children.get(order.perm_id, ())]

    def _cancel(self, order: SimOrder, *, announce_error: bool) -> None:
        book = self._book(order.con_id)
        if book.get(order.key) is not None:
            self.books[order.con_id] = book.cancel(order.key, now=self.clock.now()).book
        self._finish(order, CANCELLED, "Cancelled", error=202 if announce_error else None)
        for child in self._children(order):
            if not child.is_done:
                self._cancel(child, announce_error=announce_error)

    def _finish(self, order: SimOrder, status: str, completed_status: str, *, error: int | None = None) -> None:
        order.status = status
        order.completed_at = self.clock.now()
        order.completed_status = completed_status
        self.dirty = True
        if error is not None:
            # TWS reports a cancel as error 202 first, then the Cancelled status.
            self._error(order.client_id, order.order_id, error, "Order Canceled - reason:")
        self._announce(order, open_order=False)

    def _apply(self, events: tuple[matching.Event, ...], at: datetime) -> None:
        for event in events:
            order = self.state.orders.get(int(event.key))
            if order is None:
                continue
            if isinstance(event, matching.Fill):
                self._book_fill(order, event)
            elif isinstance(event, matching.Done) and not order.is_done:
                self._finish(order, CANCELLED, f"Cancelled ({event.reason.value})")
            elif isinstance(event, matching.Rejected):
                logger.warning("matching refused order %s: %s", order.perm_id, event.reason)
                self._error(order.client_id, order.order_id, 201, f"Order rejected - reason:{event.reason}")

    def _book_fill(self, order: SimOrder, fill: matching.Fill) -> None:
        commission = self.commissions.for_fill(order.filled, order.notional, fill.quantity, fill.price)
        order.filled += fill.quantity
        order.notional += fill.quantity * fill.price
        order.last_fill_price = fill.price
        order.commission += commission
        position = self.state.position(order.account, order.con_id)
        realized = position.apply(order.action, fill.quantity, fill.price, commission)
        account = self.state.accounts[order.account]
        signed_cash = -fill.quantity * fill.price if order.action == "BUY" else fill.quantity * fill.price
        account.cash += signed_cash - commission
        seq = self.state.next_exec_seq
        self.state.next_exec_seq += 1
        execution = SimExecution(
            exec_id=f"{self.exec_prefix:08x}.{seq:08x}.01.01",
            perm_id=order.perm_id,
            order_id=order.order_id,
            client_id=order.client_id,
            account=order.account,
            con_id=order.con_id,
            side="BOT" if order.action == "BUY" else "SLD",
            shares=fill.quantity,
            price=fill.price,
            time=fill.at,
            cum_qty=order.filled,
            avg_price=order.average_price,
            order_ref=order.order_ref,
            liquidity=LIQUIDITY_CODES[fill.liquidity],
            exchange=self._instrument(order.con_id).primary_exchange,
            commission=commission,
            realized_pnl=realized,
        )
        self.state.executions.append(execution)
        if order.filled >= order.quantity:
            order.status = FILLED
            order.completed_at = fill.at
            order.completed_status = "Filled"
        self.dirty = True
        notifier = self.notifier
        if notifier:
            if self.faults.commission_first:
                notifier.commission(order, execution)
            notifier.execution(order, execution)
            notifier.order_changed(order)
            if self.faults.commission_delay > 0:
                delayed = notifier.commission
                asyncio.get_running_loop().call_later(self.faults.commission_delay, delayed, order, execution)
            elif not self.faults.commission_first:
                notifier.commission(order, execution)
            notifier.portfolio_changed(order.account, order.con_id)
        self._after_fill(order, fill.quantity)

    def _after_fill(self, order: SimOrder, quantity: Decimal) -> None:
        """Brackets and OCA groups: activate children, cancel or reduce siblings."""
        if order.status == FILLED:
            for child in self._children(order):
                if child.status == PRE_SUBMITTED and self._book(child.con_id).get(child.key) is None:
                    self._activate(child)
        siblings = self._siblings(order)
        for sibling in siblings:
            if sibling.is_done:
                continue
            reduce = order.oca_type in (2, 3) or (not order.oca_group and order.parent_perm_id)
            if order.status == FILLED or not reduce:
                self._cancel(sibling, announce_error=False)
            else:
                # OCA "reduce" (and IB's brackets): the sibling shrinks by what this order filled.
                self._shrink(sibling, quantity)

    def _siblings(self, order: SimOrder) -> list[SimOrder]:
        state = self.state
        if order.oca_group:
            members = state.oca_groups.get((order.account, order.oca_group), [])
        elif order.parent_perm_id:
            # The children of one bracket behave as an implicit OCA group.
            members = state.children.get(order.parent_perm_id, [])
        else:
            return []
        return [state.orders[p] for p in members if p != order.perm_id]

    def _shrink(self, order: SimOrder, quantity: Decimal) -> None:
        new_quantity = order.quantity - quantity
        if new_quantity <= order.filled:
            self._cancel(order, announce_error=False)
            return
        order.quantity = new_quantity
        book = self._book(order.con_id)
        if book.get(order.key) is not None:
            now = self.clock.now()
            step = book.replace(
                self.spec(order), now=now, session_open=self.schedule.is_open(now), halted=self._halted()
            )
            self.books[order.con_id] = step.book
            self._announce(order)
            self._apply(step.events, now)
        else:
            self._announce(order)

    # -- helpers -----------------------------------------------------------------------------

    def spec(self, order: SimOrder) -> matching.OrderSpec:
        """The matching engine's view of an order."""
        order_type = SUPPORTED_TYPES[order.order_type]
        trailing_amount = order.aux_price if order_type is matching.OrderType.TRAIL else None
        return matching.OrderSpec(
            key=order.key,
            side=matching.Side(order.action),
            quantity=order.quantity,
            order_type=order_type,
            limit_price=order.limit_price,
            stop_price=order.aux_price if order_type is not matching.OrderType.TRAIL else None,
            trailing_amount=trailing_amount if order.trailing_percent is None else None,
            trailing_percent=order.trailing_percent,
            trail_stop_price=order.trail_stop_price,
            tif=SUPPORTED_TIFS[order.tif],
            good_till=parse_ib_time(order.good_till_date) if order.tif == "GTD" else None,
            outside_rth=order.outside_rth,
        )

    def _halted(self) -> bool:
        """No matching while IB's backend is unreachable or a test switched the fill model off."""
        return self.faults.backend_down or not self.faults.auto_match

    def _announce(self, order: SimOrder, *, open_order: bool = True) -> None:
        if self.notifier:
            self.notifier.order_changed(order, open_order=open_order)

    def _error(self, client_id: int, order_id: int, code: int, message: str) -> None:
        if self.notifier:
            self.notifier.order_error(client_id, order_id, code, message)

    def _instrument(self, con_id: int) -> Instrument:
        instrument = self.catalogue.get(con_id)
        if instrument is None:
            raise KeyError(f"unknown conId {con_id}")
        return instrument

    def _book(self, con_id: int) -> matching.OrderBook:
        book = self.books.get(con_id)
        if book is None:
            book = self.books[con_id] = matching.OrderBook()
        return book

    def _rebuild_books(self) -> None:
        """After loading a state file: put the working orders back into fresh books, fills included."""
        for order in sorted(self.state.orders.values(), key=lambda o: o.perm_id):
            self.state.add_order(order)  # rebuilds the indexes
            if order.status not in (SUBMITTED, PRE_SUBMITTED):
                continue
            if order.parent_perm_id and self.state.orders[order.parent_perm_id].status != FILLED:
                continue  # a bracket child still waiting for its parent
            self.quote(order.con_id)
            book = self._book(order.con_id)
            working = matching.WorkingOrder(
                spec=self.spec(order),
                sequence=book.next_sequence,
                filled=order.filled,
                notional=order.notional,
                rested=True,
            )
            self.books[order.con_id] = evolve(
                book, orders=(*book.orders, working), next_sequence=book.next_sequence + 1
            )


def order_leverage(snap: accounts.AccountSnapshot) -> Decimal:
    return snap.account.leverage
