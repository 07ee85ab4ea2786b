"""The paper venue (pure): fills, brackets, OCA groups, cancels and modifications as broker events."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from apps.brokers.matching import Quote
from apps.brokers.paper.venue import PaperOrder, PaperVenue, order_spec
from apps.brokers.paper.walk import Listing, RandomWalk, on_tick, quote_around

D = Decimal
NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
AAPL = Listing(key="i-aapl", symbol="AAPL", tick_size=D("0.01"), reference_price=D(190))


def order(order_id, side="BUY", quantity="100", order_type="MKT", **extra):
    item = {
        "order_id": order_id,
        "side": side,
        "quantity": quantity,
        "order_type": order_type,
        "time_in_force": extra.pop("time_in_force", "DAY"),
        **extra,
    }
    parent_id = item.pop("parent_id", None)
    oca_group = item.pop("oca_group", None)
    return PaperOrder(
        order_id=order_id,
        tenant_id="t",
        account_id="a",
        listing=AAPL,
        currency="USD",
        spec=order_spec(item),
        parent_id=parent_id,
        oca_group=oca_group,
    )


def venue_at(bid="189.99", ask="190.01", size="10000"):
    venue = PaperVenue()
    venue.set_quote(AAPL.key, Quote(D(bid), D(ask), D(190), D(size), D(size)), now=NOW)
    return venue


def kinds(events):
    return [(event.kind, event.order_id) for event in events]


def test_market_order_is_accepted_then_filled_at_the_ask_with_commission():
    events = venue_at().submit([order("o1")], now=NOW)
    assert kinds(events) == [("accepted", "o1"), ("execution", "o1")]
    assert events[0].broker_order_id == "PAPER-o1"
    fill = events[1].fill
    assert (fill.exec_id, fill.quantity, fill.price, fill.commission) == ("o1.1", D(100), D("190.01"), D("0.35"))


def test_partial_fills_by_liquidity_and_commission_minimum_charged_once():
    venue = venue_at(size="60")
    events = venue.submit([order("o1")], now=NOW)
    assert [e.fill.quantity for e in events if e.fill] == [D(60)]
    later = venue.set_quote(AAPL.key, Quote(D("190.00"), D("190.02"), D(190), D(100), D(100)), now=NOW)
    (rest,) = [e for e in later if e.fill]
    assert (rest.fill.exec_id, rest.fill.quantity, rest.fill.price) == ("o1.2", D(40), D("190.02"))
    assert events[1].fill.commission + rest.fill.commission == D("0.35")


def test_duplicate_submission_is_ignored():
    venue = venue_at()
    venue.submit([order("o1", order_type="LMT", limit_price="100")], now=NOW)
    assert venue.submit([order("o1", order_type="LMT", limit_price="100")], now=NOW) == []


def test_resting_limit_cancel_and_late_cancel_is_rejected():
    venue = venue_at()
    assert kinds(venue.submit([order("o1", order_type="LMT", limit_price="150")], now=NOW)) == [("accepted", "o1")]
    (cancelled,) = venue.cancel("o1", now=NOW)
    assert (cancelled.kind, cancelled.reason) == ("cancelled", "cancelled")
    (refused,) = venue.cancel("o1", now=NOW)
    assert (refused.kind, refused.request, refused.reason) == ("rejected", "cancel", "order is not working")


def test_modify_reprices_a_resting_limit_into_a_fill_and_bad_modify_is_rejected():
    venue = venue_at()
    venue.submit([order("o1", order_type="LMT", limit_price="150")], now=NOW)
    events = venue.modify(order("o1", order_type="LMT", limit_price="191"), now=NOW)
    assert kinds(events) == [("accepted", "o1"), ("execution", "o1")]
    assert events[1].fill.price == D("190.01")
    (refused,) = venue.modify(order("o1", order_type="LMT", limit_price="192"), now=NOW)
    assert (refused.kind, refused.request) == ("rejected", "modify")


def test_bracket_legs_wait_for_the_parent_then_one_fill_cancels_the_other():
    venue = venue_at()
    parent = order("p", order_type="LMT", limit_price="150")
    take = order("tp", side="SELL", order_type="LMT", limit_price="195", parent_id="p", oca_group="g")
    stop = order("sl", side="SELL", order_type="STP", stop_price="140", parent_id="p", oca_group="g")
    assert kinds(venue.submit([parent, take, stop], now=NOW)) == [
        ("accepted", "p"),
        ("accepted", "tp"),
        ("accepted", "sl"),
    ]
    assert venue.books[AAPL.key].get("tp") is None  # held until the parent fills
    filled = venue.set_quote(AAPL.key, Quote(D("149.98"), D("150.00"), D(150), D(1000), D(1000)), now=NOW)
    assert kinds(filled) == [("execution", "p")]
    assert {o.spec.key for o in venue.books[AAPL.key].orders} == {"tp", "sl"}
    exit_events = venue.set_quote(AAPL.key, Quote(D("195.00"), D("195.02"), D(195), D(1000), D(1000)), now=NOW)
    assert kinds(exit_events) == [("execution", "tp"), ("cancelled", "sl")]
    assert venue.books[AAPL.key].orders == ()


def test_cancelled_parent_cancels_its_held_legs():
    venue = venue_at()
    parent = order("p", order_type="LMT", limit_price="150")
    leg = order("tp", side="SELL", order_type="LMT", limit_price="195", parent_id="p")
    venue.submit([parent, leg], now=NOW)
    assert kinds(venue.cancel("p", now=NOW)) == [("cancelled", "p"), ("cancelled", "tp")]


def test_ioc_remainder_is_cancelled_and_day_orders_expire_at_the_close():
    venue = venue_at(size="30")
    events = venue.submit([order("i", time_in_force="IOC")], now=NOW)
    assert kinds(events) == [("accepted", "i"), ("execution", "i"), ("cancelled", "i")]
    venue.submit([order("d", order_type="LMT", limit_price="150"), order("m", order_type="MOC")], now=NOW)
    closed = venue.close_auction(AAPL.key, D("190.5"), now=NOW)
    assert kinds(closed) == [("execution", "m"), ("expired", "d")]


def test_walk_is_seeded_and_stays_on_the_tick_grid():
    first, second = RandomWalk(seed=7), RandomWalk(seed=7)
    quote_a = quote_b = first.initial(AAPL)
    for _ in range(50):
        quote_a, quote_b = first.step(AAPL, quote_a), second.step(AAPL, quote_b)
        assert quote_a == quote_b
        assert quote_a.bid < quote_a.ask
        assert on_tick(quote_a.last, AAPL.tick_size) == quote_a.last
    assert quote_around(AAPL, D("0.001"), 2, D(1)).bid == D("0.01")


def test_working_orders_are_kept_and_restored_with_their_fills_and_held_legs():
    venue = venue_at(size="60")
    parent = order("p", quantity="100", order_type="LMT", limit_price="190.05")
    child = order("c", side="SELL", quantity="100", order_type="LMT", limit_price="200", parent_id="p")
    venue.submit([parent, child], now=NOW)  # 60 of the parent fill at once
    kept = {order_id: venue.working(order_id) for order_id in ("p", "c")}
    assert (kept["p"]["filled"], kept["p"]["executions"], kept["c"]["waits_for"]) == ("60", 1, "p")
    assert order_spec(kept["p"]) == parent.spec

    restored = venue_at(size="60")
    restored.restore(parent, filled=D(60), notional=D("11403.00"), executions=1)
    restored.restore(child, parent_working=True)
    events = restored.set_quote(AAPL.key, Quote(D("189.98"), D("190.00"), D(190), D(60), D(60)), now=NOW)
    assert [(e.kind, e.order_id, e.fill.exec_id if e.fill else "") for e in events] == [("execution", "p", "p.2")]
    assert events[0].fill.quantity == D(40)
    assert restored.working("p") is None and restored.working("c")["waits_for"] is None  # the leg now works


def test_a_trailing_stop_keeps_its_level_across_a_restart():
    venue = venue_at()  # last 190
    trail = order("t", side="SELL", order_type="TRAIL", trail_amount="1.00")
    venue.submit([trail], now=NOW)  # stop at 189
    venue.changed.clear()
    venue.set_quote(AAPL.key, Quote(D("194.99"), D("195.01"), D(195), D(10000), D(10000)), now=NOW)
    assert venue.changed == {"t"}  # ratcheted to 194 without a broker event: to be kept
    kept = venue.working("t")
    assert (D(kept["trail_stop"]), kept["triggered"]) == (D(194), False)

    restored = PaperVenue()
    at_193 = Quote(D("193.49"), D("193.51"), D("193.50"), D(10000), D(10000))
    restored.set_quote(AAPL.key, at_193, now=NOW)
    restored.restore(trail, trail_stop=D(kept["trail_stop"]))
    # From 193.50 a fresh trail would stop at 192.50; the kept level of 194 is already crossed.
    events = restored.set_quote(AAPL.key, at_193, now=NOW)
    assert [(e.kind, e.fill.price) for e in events] == [("execution", D("193.49"))]
