"""The pure fill model: examples for each rule, and properties that must hold for any quote path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from apps.brokers.matching import (
    CommissionSchedule,
    Done,
    DoneReason,
    Fill,
    Liquidity,
    OrderBook,
    OrderSpec,
    OrderType,
    Quote,
    Rejected,
    Side,
    TimeInForce,
    Triggered,
)

NOW = datetime(2025, 3, 10, 15, 0, tzinfo=UTC)
D = Decimal


def quote(bid: str, ask: str, last: str | None = None, size: str = "100") -> Quote:
    return Quote(D(bid), D(ask), D(last or bid), D(size), D(size))


def book_at(bid: str = "99.99", ask: str = "100.01", last: str = "100", size: str = "100") -> OrderBook:
    return OrderBook().update(quote(bid, ask, last, size), now=NOW).book


def spec(key: str = "1", side: Side = Side.BUY, qty: str = "10", kind: OrderType = OrderType.MARKET, **kw: object):
    return OrderSpec(key=key, side=side, quantity=D(qty), order_type=kind, **kw)  # type: ignore[arg-type]


def fills(events: tuple[object, ...]) -> list[Fill]:
    return [e for e in events if isinstance(e, Fill)]


def test_market_order_fills_at_the_touch() -> None:
    step = book_at().submit(spec(), now=NOW)
    [fill] = fills(step.events)
    assert (fill.price, fill.quantity, fill.remaining, fill.liquidity) == (D("100.01"), D(10), D(0), Liquidity.REMOVED)
    assert step.book.orders == ()


def test_market_order_larger_than_the_touch_fills_partially_then_on_the_next_quote() -> None:
    step = book_at(size="30").submit(spec(qty="50"), now=NOW)
    assert [f.quantity for f in fills(step.events)] == [D(30)]
    assert step.book.get("1").remaining == D(20)
    again = step.book.submit(spec(key="2", qty="5"), now=NOW)  # the touch is used up
    assert fills(again.events) == []
    later = again.book.update(quote("99.99", "100.02", size="30"), now=NOW)
    assert [(f.key, f.quantity) for f in fills(later.events)] == [("1", D(20)), ("2", D(5))]


def test_resting_limit_fills_at_its_limit_when_traded_through() -> None:
    step = book_at().submit(spec(kind=OrderType.LIMIT, limit_price=D("99.50")), now=NOW)
    assert fills(step.events) == []
    crossed = step.book.update(quote("99.30", "99.40"), now=NOW)
    [fill] = fills(crossed.events)
    assert (fill.price, fill.liquidity) == (D("99.50"), Liquidity.ADDED)


def test_sell_stop_triggers_on_last_and_becomes_market() -> None:
    book = book_at().submit(spec(side=Side.SELL, kind=OrderType.STOP, stop_price=D(95)), now=NOW).book
    assert fills(book.update(quote("95.10", "95.20", "95.10"), now=NOW).events) == []
    step = book.update(quote("94.80", "94.90", "94.95"), now=NOW)
    assert [type(e) for e in step.events] == [Triggered, Fill]
    assert fills(step.events)[0].price == D("94.80")


def test_trailing_percent_ratchets_and_never_loosens() -> None:
    order = spec(side=Side.SELL, kind=OrderType.TRAIL, trailing_percent=D(10))
    book = book_at(last="100").submit(order, now=NOW).book
    assert book.get("1").trail_stop == D(90)
    book = book.update(quote("119", "121", "120"), now=NOW).book
    assert book.get("1").trail_stop == D(108)
    book = book.update(quote("109", "111", "110"), now=NOW).book
    assert book.get("1").trail_stop == D(108)
    step = book.update(quote("107", "108", "107.5"), now=NOW)
    assert fills(step.events)[0].price == D(107)


def test_ioc_and_fok() -> None:
    ioc = book_at(size="30").submit(spec(qty="50", tif=TimeInForce.IOC), now=NOW)
    assert [type(e) for e in ioc.events] == [Fill, Done]
    assert ioc.events[-1].reason is DoneReason.IOC_REMAINDER  # type: ignore[union-attr]
    fok = book_at(size="30").submit(spec(qty="50", tif=TimeInForce.FOK), now=NOW)
    assert [type(e) for e in fok.events] == [Done]
    assert fok.book.orders == ()


def test_close_auction_fills_on_close_orders_and_expires_day_orders() -> None:
    book = book_at()
    book = book.submit(spec("moc", kind=OrderType.MARKET_ON_CLOSE), now=NOW).book
    book = book.submit(spec("loc", kind=OrderType.LIMIT_ON_CLOSE, limit_price=D(90)), now=NOW).book
    book = book.submit(spec("day", kind=OrderType.LIMIT, limit_price=D(90)), now=NOW).book
    book = book.submit(spec("gtc", kind=OrderType.LIMIT, limit_price=D(90), tif=TimeInForce.GTC), now=NOW).book
    step = book.close_auction(D(100), now=NOW)
    outcome = {e.key: (e.price if isinstance(e, Fill) else e.reason) for e in step.events}  # type: ignore[union-attr]
    assert outcome == {"moc": D(100), "loc": DoneReason.LOC_NOT_MARKETABLE, "day": DoneReason.DAY_EXPIRED}
    assert [o.spec.key for o in step.book.orders] == ["gtc"]


def test_gtd_expires_and_closed_session_holds_orders() -> None:
    gtd = spec(kind=OrderType.LIMIT, limit_price=D(90), tif=TimeInForce.GTD, good_till=NOW + timedelta(hours=1))
    book = book_at().submit(gtd, now=NOW).book
    assert book.expire(now=NOW + timedelta(minutes=59)).events == ()
    assert [e.reason for e in book.expire(now=NOW + timedelta(hours=1)).events] == [DoneReason.GTD_EXPIRED]  # type: ignore[union-attr]
    held = book_at().submit(spec(key="m"), now=NOW, session_open=False)
    assert fills(held.events) == []
    assert fills(book_at().submit(spec(key="x", outside_rth=True), now=NOW, session_open=False).events)


def test_replace_and_cancel_and_rejections() -> None:
    book = book_at(size="5").submit(spec(kind=OrderType.LIMIT, limit_price=D("100.05")), now=NOW).book
    assert book.get("1").filled == D(5)
    assert isinstance(book.replace(spec(qty="5", kind=OrderType.LIMIT, limit_price=D(99)), now=NOW).events[0], Rejected)
    moved = book.replace(spec(qty="20", kind=OrderType.LIMIT, limit_price=D(99)), now=NOW).book
    assert moved.get("1").remaining == D(15)
    [done] = moved.cancel("1", now=NOW).events
    assert (done.filled, done.remaining) == (D(5), D(15))  # type: ignore[union-attr]
    assert isinstance(book_at().submit(spec(kind=OrderType.LIMIT), now=NOW).events[0], Rejected)
    assert isinstance(book_at().submit(spec(kind=OrderType.TRAIL), now=NOW).events[0], Rejected)


def test_commission_minimum_once_per_order_and_cap() -> None:
    schedule = CommissionSchedule()
    assert schedule.order_total(D(100), D(19_000)) == D("0.35")
    assert schedule.order_total(D(1000), D(190_000)) == D("3.50")
    assert schedule.order_total(D(1), D("0.85")) == D("0.01")  # 1 % of the trade value caps it
    first = schedule.for_fill(D(0), D(0), D(50), D(100))
    second = schedule.for_fill(D(50), D(5000), D(50), D(100))
    assert (first, second) == (D("0.35"), D(0))


prices = st.decimals(min_value=D("1.00"), max_value=D("500.00"), places=2)
sizes = st.integers(min_value=0, max_value=500)


@st.composite
def quotes(draw: st.DrawFn) -> Quote:
    bid = draw(prices)
    spread = draw(st.integers(min_value=1, max_value=20))
    ask = bid + D(spread) / 100
    last = draw(st.sampled_from([bid, ask, (bid + ask) / 2]))
    return Quote(bid, ask, last, D(draw(sizes)), D(draw(sizes)))


@st.composite
def specs(draw: st.DrawFn, key: str) -> OrderSpec:
    kind = draw(st.sampled_from([OrderType.MARKET, OrderType.LIMIT, OrderType.STOP, OrderType.TRAIL]))
    side = draw(st.sampled_from(list(Side)))
    extra: dict[str, object] = {}
    if kind is OrderType.LIMIT:
        extra["limit_price"] = draw(prices)
    if kind is OrderType.STOP:
        extra["stop_price"] = draw(prices)
    if kind is OrderType.TRAIL:
        extra["trailing_amount"] = draw(st.decimals(min_value=D("0.01"), max_value=D("10"), places=2))
    tif = draw(st.sampled_from([TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK]))
    qty = D(draw(st.integers(min_value=1, max_value=1000)))
    return OrderSpec(key=key, side=side, quantity=qty, order_type=kind, tif=tif, **extra)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_properties_over_random_quote_paths(data: st.DataObject) -> None:
    book = OrderBook().update(data.draw(quotes()), now=NOW).book
    orders = {str(i): data.draw(specs(str(i))) for i in range(data.draw(st.integers(1, 6)))}
    filled = {key: D(0) for key in orders}
    done: set[str] = set()
    events: list[object] = []
    for order in orders.values():
        step = book.submit(order, now=NOW)
        book = step.book
        events.extend(step.events)
    for _ in range(data.draw(st.integers(0, 8))):
        current = data.draw(quotes())
        step = book.update(current, now=NOW)
        consumed_bid = sum((f.quantity for f in fills(step.events) if f.side is Side.SELL), D(0))
        consumed_ask = sum((f.quantity for f in fills(step.events) if f.side is Side.BUY), D(0))
        assert consumed_bid <= current.bid_size and consumed_ask <= current.ask_size
        book = step.book
        events.extend(step.events)
    for event in events:
        if isinstance(event, Fill):
            order = orders[event.key]
            assert event.key not in done
            filled[event.key] += event.quantity
            assert event.filled == filled[event.key] <= order.quantity
            if order.order_type is OrderType.LIMIT and order.limit_price is not None:
                assert event.price <= order.limit_price if order.side is Side.BUY else event.price >= order.limit_price
            if event.remaining == 0:
                done.add(event.key)
        elif isinstance(event, Done):
            done.add(event.key)
    for key, order in orders.items():
        if order.tif is TimeInForce.FOK:
            assert filled[key] in (D(0), order.quantity)
        working = book.get(key)
        assert (working is None) == (key in done)
        if working is not None:
            assert working.filled == filled[key]


@given(st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=8), prices)
def test_commission_does_not_depend_on_how_an_order_is_split(parts: list[int], price: Decimal) -> None:
    schedule = CommissionSchedule()
    quantity, notional, total = D(0), D(0), D(0)
    for part in parts:
        total += schedule.for_fill(quantity, notional, D(part), price)
        quantity += part
        notional += part * price
    assert total == schedule.order_total(quantity, notional)


def test_resume_puts_back_a_partly_filled_order_that_trades_on_the_next_quote() -> None:
    limit = spec(qty="50", kind=OrderType.LIMIT, limit_price=D("99.50"))
    book = book_at().resume(limit, filled=D(20), notional=D(1990))
    assert (book.get("1").remaining, book.get("1").rested) == (D(30), True)
    assert book.resume(limit) is book  # already working: unchanged
    assert book_at().resume(limit, filled=D(50), notional=D(4975)).orders == ()  # nothing left
    [fill] = fills(book.update(quote("99.30", "99.40"), now=NOW).events)
    assert (fill.quantity, fill.price, fill.filled, fill.average_price) == (D(30), D("99.50"), D(50), D("99.50"))
    # A stop that had filled had triggered: it does not wait for its stop price again.
    stop = spec(key="2", side=Side.SELL, qty="10", kind=OrderType.STOP, stop_price=D(90))
    [again] = fills(book_at().resume(stop, filled=D(4), notional=D(400)).update(quote("99", "99.02"), now=NOW).events)
    assert (again.quantity, again.price) == (D(6), D(99))
    # A trailing stop keeps its level and a stop its trigger when they are given back.
    trail = spec(key="3", side=Side.SELL, kind=OrderType.TRAIL, trailing_amount=D(1))
    assert book_at().resume(trail, trail_stop=D("99.80")).get("3").trail_stop == D("99.80")
    assert book_at().resume(trail).get("3").trail_stop == D(99)  # else from the current price
    stop_limit = spec(key="4", side=Side.SELL, kind=OrderType.STOP_LIMIT, stop_price=D(90), limit_price=D(89))
    assert book_at().resume(stop_limit, triggered=True).get("4").triggered
    assert not book_at().resume(stop_limit).get("4").triggered
