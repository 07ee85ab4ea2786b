"""The fill model: one pure order book per instrument, shared by the IB simulator and the paper broker.

Nothing here knows about Django, asyncio, sockets or IB's wire format. An `OrderBook` is an
immutable value: every operation (`submit`, `replace`, `cancel`, `update`, `close_auction`,
`expire`, `force_fill`) returns a `Step` holding the next book and the events it produced
(`Fill`, `Done`, `Triggered`, `Rejected`). Callers keep the book, persist it if they like, and turn
the events into their own messages: IB wire frames in `apps.brokers.ibsim`, order events in the
paper broker.

The model, deliberately simple and deterministic:

* A `Quote` is the top of book: bid/ask with their displayed sizes, and the last trade price.
  The displayed sizes are the liquidity available *for that quote*: orders consume it in time
  priority, so an order larger than the touch fills partially and waits for the next quote.
* Market orders (and stops once triggered) take liquidity at the touch (ask for a buy, bid for
  a sell). A limit order that is marketable when it arrives also fills at the touch (price
  improvement); a limit order that rested and is crossed later fills at its own limit price (the
  incoming order traded through it), with ``Liquidity.ADDED``.
* Stops trigger on the last price (IB's default trigger method for US stocks); a triggered stop
  becomes a market order, a triggered stop-limit a limit order. Trailing stops ratchet their stop
  with the last price, by an amount or a percentage.
* MOC and LOC orders only fill in the closing auction (`close_auction`), at the closing price,
  with unlimited liquidity; an LOC whose limit the close does not satisfy is done unfilled.
* IOC fills what it can on arrival and is done for the rest; FOK fills completely on arrival or
  not at all. DAY orders are done after the closing auction; GTD orders when their time passes.
* When the session is closed, only orders with ``outside_rth`` may fill or trigger.

Prices and quantities are `Decimal` throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import replace as evolve
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

ZERO = Decimal(0)
HUNDRED = Decimal(100)
CENT = Decimal("0.01")


class Side(StrEnum):
    """The direction of an order."""

    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    """Order types the fill model understands (IB's spelling)."""

    MARKET = "MKT"
    LIMIT = "LMT"
    STOP = "STP"
    STOP_LIMIT = "STP LMT"
    TRAIL = "TRAIL"
    MARKET_ON_CLOSE = "MOC"
    LIMIT_ON_CLOSE = "LOC"


class TimeInForce(StrEnum):
    """Time in force (IB's spelling)."""

    DAY = "DAY"
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    GTD = "GTD"


class Liquidity(StrEnum):
    """Whether a fill added liquidity (a resting order was hit), removed it, or came from an auction."""

    ADDED = "ADDED"
    REMOVED = "REMOVED"
    AUCTION = "AUCTION"


class DoneReason(StrEnum):
    """Why an order left the book without being completely filled."""

    CANCELLED = "CANCELLED"
    IOC_REMAINDER = "IOC_REMAINDER"
    FOK_UNFILLABLE = "FOK_UNFILLABLE"
    DAY_EXPIRED = "DAY_EXPIRED"
    GTD_EXPIRED = "GTD_EXPIRED"
    LOC_NOT_MARKETABLE = "LOC_NOT_MARKETABLE"


ON_CLOSE_TYPES = frozenset({OrderType.MARKET_ON_CLOSE, OrderType.LIMIT_ON_CLOSE})
STOP_TYPES = frozenset({OrderType.STOP, OrderType.STOP_LIMIT, OrderType.TRAIL})
LIMIT_TYPES = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT, OrderType.LIMIT_ON_CLOSE})


@dataclass(frozen=True, slots=True)
class Quote:
    """The top of book and last trade of one instrument at one moment."""

    bid: Decimal
    ask: Decimal
    last: Decimal
    bid_size: Decimal
    ask_size: Decimal


@dataclass(frozen=True, slots=True)
class OrderSpec:
    """What the client asked for. `key` is the caller's identity for the order (IB: the permId)."""

    key: str
    side: Side
    quantity: Decimal
    order_type: OrderType
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trailing_amount: Decimal | None = None
    trailing_percent: Decimal | None = None
    trail_stop_price: Decimal | None = None
    tif: TimeInForce = TimeInForce.DAY
    good_till: datetime | None = None
    outside_rth: bool = False

    def problem(self) -> str | None:
        """Return why this spec cannot be accepted, or None if it is well formed."""
        if self.quantity <= ZERO:
            return "order quantity must be positive"
        if self.order_type in LIMIT_TYPES and (self.limit_price is None or self.limit_price <= ZERO):
            return f"{self.order_type} order needs a positive limit price"
        if self.order_type in (OrderType.STOP, OrderType.STOP_LIMIT) and (
            self.stop_price is None or self.stop_price <= ZERO
        ):
            return f"{self.order_type} order needs a positive stop price"
        if self.order_type is OrderType.TRAIL:
            amount, percent = self.trailing_amount, self.trailing_percent
            if (amount is None) == (percent is None):
                return "TRAIL order needs exactly one of a trailing amount or a trailing percent"
            if (amount is not None and amount <= ZERO) or (percent is not None and not ZERO < percent < HUNDRED):
                return "TRAIL order needs a positive trailing amount or a percent between 0 and 100"
        if self.order_type in ON_CLOSE_TYPES and self.tif in (TimeInForce.IOC, TimeInForce.FOK):
            return f"{self.order_type} orders cannot be {self.tif}"
        if self.tif is TimeInForce.GTD and self.good_till is None:
            return "GTD order needs a good-till time"
        return None


@dataclass(frozen=True, slots=True)
class WorkingOrder:
    """An order in the book, with what has happened to it so far."""

    spec: OrderSpec
    sequence: int
    filled: Decimal = ZERO
    notional: Decimal = ZERO
    triggered: bool = False
    trail_stop: Decimal | None = None
    rested: bool = False

    @property
    def remaining(self) -> Decimal:
        return self.spec.quantity - self.filled

    @property
    def average_price(self) -> Decimal:
        return self.notional / self.filled if self.filled else ZERO


@dataclass(frozen=True, slots=True)
class Fill:
    """Part or all of an order traded. `filled`/`remaining`/`average_price` are cumulative after it."""

    key: str
    side: Side
    quantity: Decimal
    price: Decimal
    filled: Decimal
    remaining: Decimal
    average_price: Decimal
    liquidity: Liquidity
    at: datetime


@dataclass(frozen=True, slots=True)
class Done:
    """The order left the book without (completely) filling."""

    key: str
    reason: DoneReason
    filled: Decimal
    remaining: Decimal
    at: datetime


@dataclass(frozen=True, slots=True)
class Triggered:
    """A stop or trailing stop reached its stop price and is now a market or limit order."""

    key: str
    stop_price: Decimal
    at: datetime


@dataclass(frozen=True, slots=True)
class Rejected:
    """The book refused a submission or replacement; the book is unchanged."""

    key: str
    reason: str


Event = Fill | Done | Triggered | Rejected


@dataclass(frozen=True, slots=True)
class Step:
    """The result of one operation: the next book and what happened."""

    book: OrderBook
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class CommissionSchedule:
    """A per-share commission with a per-order minimum and a cap, as IB's tiered/fixed pricing.

    The commission of an execution is what the order's cumulative commission grows by, so the
    minimum is charged once per order (on its first fill) however it is split.
    """

    per_share: Decimal = Decimal("0.0035")
    minimum: Decimal = Decimal("0.35")
    maximum_rate: Decimal = Decimal("0.01")

    def order_total(self, quantity: Decimal, notional: Decimal) -> Decimal:
        """Return the commission of an order that has traded `quantity` shares for `notional`."""
        if quantity <= ZERO:
            return ZERO
        charge = max(quantity * self.per_share, self.minimum)
        cap = abs(notional) * self.maximum_rate
        return min(charge, cap).quantize(CENT, rounding=ROUND_HALF_UP)

    def for_fill(self, prior_quantity: Decimal, prior_notional: Decimal, quantity: Decimal, price: Decimal) -> Decimal:
        """Return the commission of one execution of `quantity` at `price` after earlier fills."""
        after = self.order_total(prior_quantity + quantity, prior_notional + quantity * price)
        return after - self.order_total(prior_quantity, prior_notional)


def _initial_trail_stop(spec: OrderSpec, last: Decimal) -> Decimal:
    if spec.trail_stop_price is not None:
        return spec.trail_stop_price
    return _trail_level(spec, last)


def _trail_level(spec: OrderSpec, last: Decimal) -> Decimal:
    if spec.trailing_amount is not None:
        offset = spec.trailing_amount
    else:
        offset = last * (spec.trailing_percent or ZERO) / HUNDRED
    return last - offset if spec.side is Side.SELL else last + offset


def _stop_crossed(side: Side, stop: Decimal, last: Decimal) -> bool:
    return last >= stop if side is Side.BUY else last <= stop


@dataclass(frozen=True, slots=True)
class OrderBook:
    """The working orders of one instrument and the current quote (with its unconsumed liquidity)."""

    quote: Quote | None = None
    orders: tuple[WorkingOrder, ...] = ()
    bid_available: Decimal = ZERO
    ask_available: Decimal = ZERO
    next_sequence: int = 0

    # -- queries -----------------------------------------------------------------------------

    def get(self, key: str) -> WorkingOrder | None:
        """Return the working order with this key, or None."""
        for order in self.orders:
            if order.spec.key == key:
                return order
        return None

    # -- operations --------------------------------------------------------------------------

    def submit(self, spec: OrderSpec, *, now: datetime, session_open: bool = True, halted: bool = False) -> Step:
        """Add a new order; it trades at once against the current quote if it can.

        `halted` means nothing trades at all (a trading halt, or no connection to the market);
        a closed session (`session_open` False) still lets ``outside_rth`` orders trade.
        """
        problem = spec.problem()
        if problem is None and self.get(spec.key) is not None:
            problem = f"order {spec.key} is already working"
        if problem is not None:
            return Step(self, (Rejected(spec.key, problem),))
        order = WorkingOrder(spec=spec, sequence=self.next_sequence)
        if spec.order_type is OrderType.TRAIL and self.quote is not None:
            order = evolve(order, trail_stop=_initial_trail_stop(spec, self.quote.last))
        book = evolve(self, orders=(*self.orders, order), next_sequence=self.next_sequence + 1)
        return book._match_one(spec.key, now=now, session_open=session_open, arriving=True, halted=halted)

    def resume(
        self,
        spec: OrderSpec,
        *,
        filled: Decimal = ZERO,
        notional: Decimal = ZERO,
        triggered: bool = False,
        trail_stop: Decimal | None = None,
    ) -> OrderBook:
        """Put back an order that was working before a restart, with what it had already filled.

        No events and no matching now: the order rests (a limit crossed later fills at its own
        price) and trades on the next quote. A stop keeps its trigger (one that had filled had
        triggered) and a trailing stop its level (else it starts from the current price). An order
        with nothing left, an ill-formed one or a key already in the book leaves the book unchanged.
        """
        if spec.problem() is not None or self.get(spec.key) is not None or filled >= spec.quantity:
            return self
        order = WorkingOrder(
            spec=spec,
            sequence=self.next_sequence,
            filled=filled,
            notional=notional,
            triggered=spec.order_type in STOP_TYPES and (triggered or filled > ZERO),
            trail_stop=trail_stop if spec.order_type is OrderType.TRAIL else None,
            rested=self.quote is not None,
        )
        if spec.order_type is OrderType.TRAIL and order.trail_stop is None and self.quote is not None:
            order = evolve(order, trail_stop=_initial_trail_stop(spec, self.quote.last))
        return evolve(self, orders=(*self.orders, order), next_sequence=self.next_sequence + 1)

    def replace(self, spec: OrderSpec, *, now: datetime, session_open: bool = True, halted: bool = False) -> Step:
        """Modify a working order in place (same key): new quantity, prices or time in force."""
        current = self.get(spec.key)
        problem = spec.problem()
        if current is None:
            problem = f"order {spec.key} is not working"
        elif problem is None and spec.quantity <= current.filled:
            problem = f"new quantity {spec.quantity} does not exceed the filled {current.filled}"
        if problem is not None or current is None:
            return Step(self, (Rejected(spec.key, problem or "unknown order"),))
        old = current.spec
        same_stop = old.order_type == spec.order_type and old.stop_price == spec.stop_price
        same_trail = (old.trailing_amount, old.trailing_percent, old.trail_stop_price) == (
            spec.trailing_amount,
            spec.trailing_percent,
            spec.trail_stop_price,
        )
        trail_stop = current.trail_stop if same_trail else None
        if spec.order_type is OrderType.TRAIL and trail_stop is None and self.quote is not None:
            trail_stop = _initial_trail_stop(spec, self.quote.last)
        updated = evolve(
            current,
            spec=spec,
            triggered=current.triggered and same_stop and same_trail,
            trail_stop=trail_stop,
            rested=False,
        )
        book = self._with_order(updated)
        return book._match_one(spec.key, now=now, session_open=session_open, arriving=True, halted=halted)

    def cancel(self, key: str, *, now: datetime) -> Step:
        """Remove a working order; the event says how much of it had filled."""
        order = self.get(key)
        if order is None:
            return Step(self, (Rejected(key, f"order {key} is not working"),))
        book = self._without(key)
        return Step(book, (Done(key, DoneReason.CANCELLED, order.filled, order.remaining, now),))

    def update(self, quote: Quote, *, now: datetime, session_open: bool = True) -> Step:
        """Take a new quote: expire due GTD orders, move trailing stops, trigger stops, fill."""
        book = evolve(self, quote=quote, bid_available=quote.bid_size, ask_available=quote.ask_size)
        events: list[Event] = []
        expired = book.expire(now=now)
        book = expired.book
        events.extend(expired.events)
        for order in sorted(book.orders, key=lambda o: o.sequence):
            step = book._match_one(order.spec.key, now=now, session_open=session_open, arriving=False)
            book = step.book
            events.extend(step.events)
        return Step(book, tuple(events))

    def expire(self, *, now: datetime) -> Step:
        """Remove GTD orders whose good-till time has passed."""
        events: list[Event] = []
        kept: list[WorkingOrder] = []
        for order in self.orders:
            spec = order.spec
            if spec.tif is TimeInForce.GTD and spec.good_till is not None and spec.good_till <= now:
                events.append(Done(spec.key, DoneReason.GTD_EXPIRED, order.filled, order.remaining, now))
            else:
                kept.append(order)
        if not events:
            return Step(self, ())
        return Step(evolve(self, orders=tuple(kept)), tuple(events))

    def close_auction(self, close_price: Decimal, *, now: datetime) -> Step:
        """Run the closing auction: fill MOC/LOC at `close_price`, then end every DAY order."""
        book = self
        events: list[Event] = []
        for order in sorted(self.orders, key=lambda o: o.sequence):
            spec = order.spec
            if spec.order_type not in ON_CLOSE_TYPES:
                continue
            limit = spec.limit_price
            marketable = spec.order_type is OrderType.MARKET_ON_CLOSE or (
                limit is not None and (close_price <= limit if spec.side is Side.BUY else close_price >= limit)
            )
            if marketable:
                step = book._fill(order, order.remaining, close_price, Liquidity.AUCTION, now)
                book, events = step.book, [*events, *step.events]
            else:
                book = book._without(spec.key)
                events.append(Done(spec.key, DoneReason.LOC_NOT_MARKETABLE, order.filled, order.remaining, now))
        for order in book.orders:
            if order.spec.tif is TimeInForce.DAY:
                events.append(Done(order.spec.key, DoneReason.DAY_EXPIRED, order.filled, order.remaining, now))
        book = evolve(book, orders=tuple(o for o in book.orders if o.spec.tif is not TimeInForce.DAY))
        return Step(book, tuple(events))

    def force_fill(self, key: str, quantity: Decimal, price: Decimal, *, now: datetime) -> Step:
        """Fill an order regardless of the quote (a test or operator says it traded)."""
        order = self.get(key)
        if order is None:
            return Step(self, (Rejected(key, f"order {key} is not working"),))
        if not ZERO < quantity <= order.remaining:
            return Step(self, (Rejected(key, f"cannot fill {quantity} of remaining {order.remaining}"),))
        return self._fill(order, quantity, price, Liquidity.REMOVED, now)

    # -- internals ---------------------------------------------------------------------------

    def _with_order(self, order: WorkingOrder) -> OrderBook:
        orders = tuple(order if o.spec.key == order.spec.key else o for o in self.orders)
        return evolve(self, orders=orders)

    def _without(self, key: str) -> OrderBook:
        return evolve(self, orders=tuple(o for o in self.orders if o.spec.key != key))

    def _fill(
        self, order: WorkingOrder, quantity: Decimal, price: Decimal, liquidity: Liquidity, now: datetime
    ) -> Step:
        filled = order.filled + quantity
        notional = order.notional + quantity * price
        updated = evolve(order, filled=filled, notional=notional)
        book = self._without(order.spec.key) if updated.remaining <= ZERO else self._with_order(updated)
        fill = Fill(
            key=order.spec.key,
            side=order.spec.side,
            quantity=quantity,
            price=price,
            filled=filled,
            remaining=updated.remaining,
            average_price=updated.average_price,
            liquidity=liquidity,
            at=now,
        )
        return Step(book, (fill,))

    def _match_one(self, key: str, *, now: datetime, session_open: bool, arriving: bool, halted: bool = False) -> Step:
        """Try to trade one order against the current quote; handles stops, IOC and FOK."""
        order = self.get(key)
        if order is None:
            return Step(self, ())
        spec = order.spec
        quote = self.quote
        events: list[Event] = []
        book = self
        tradable = not halted and (session_open or spec.outside_rth)
        if quote is None or spec.order_type in ON_CLOSE_TYPES or not tradable:
            return book._finish_arrival(order, events, now=now, arriving=arriving)

        # Stops: ratchet a trailing stop, then check the trigger on the last price.
        if spec.order_type in STOP_TYPES and not order.triggered:
            stop = spec.stop_price
            if spec.order_type is OrderType.TRAIL:
                level = _trail_level(spec, quote.last)
                current = order.trail_stop if order.trail_stop is not None else level
                stop = max(current, level) if spec.side is Side.SELL else min(current, level)
                order = evolve(order, trail_stop=stop)
                book = book._with_order(order)
            if stop is None or not _stop_crossed(spec.side, stop, quote.last):
                return book._finish_arrival(order, events, now=now, arriving=arriving)
            order = evolve(order, triggered=True, rested=False)
            book = book._with_order(order)
            events.append(Triggered(key, stop, now))
            arriving = True  # a triggered stop arrives at the market now

        limit = spec.limit_price if spec.order_type in LIMIT_TYPES else None
        buy = spec.side is Side.BUY
        touch = quote.ask if buy else quote.bid
        available = book.ask_available if buy else book.bid_available
        marketable = limit is None or (touch <= limit if buy else touch >= limit)
        if marketable and available > ZERO and touch > ZERO:
            quantity = min(order.remaining, available)
            if spec.tif is TimeInForce.FOK and quantity < order.remaining:
                book = book._without(key)
                events.append(Done(key, DoneReason.FOK_UNFILLABLE, order.filled, order.remaining, now))
                return Step(book, tuple(events))
            # A limit that rested and is now crossed was traded through at its own price.
            price = touch if (arriving or not order.rested or limit is None) else limit
            liquidity = Liquidity.ADDED if (order.rested and limit is not None) else Liquidity.REMOVED
            step = book._fill(order, quantity, price, liquidity, now)
            book = step.book
            events.extend(step.events)
            if buy:
                book = evolve(book, ask_available=book.ask_available - quantity)
            else:
                book = evolve(book, bid_available=book.bid_available - quantity)
            order_after = book.get(key)
            if order_after is None:
                return Step(book, tuple(events))
            order = order_after
        return book._finish_arrival(order, events, now=now, arriving=arriving)

    def _finish_arrival(self, order: WorkingOrder, events: list[Event], *, now: datetime, arriving: bool) -> Step:
        """Apply IOC/FOK to what is left of an arriving order; mark others as resting."""
        key = order.spec.key
        tif = order.spec.tif
        if arriving and tif in (TimeInForce.IOC, TimeInForce.FOK) and self.get(key) is not None:
            reason = DoneReason.IOC_REMAINDER if tif is TimeInForce.IOC else DoneReason.FOK_UNFILLABLE
            events.append(Done(key, reason, order.filled, order.remaining, now))
            return Step(self._without(key), tuple(events))
        current = self.get(key)
        book = self
        if current is not None and not current.rested and self.quote is not None:
            book = self._with_order(evolve(current, rested=True))
        return Step(book, tuple(events))
