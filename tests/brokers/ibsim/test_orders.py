"""Orders through the real ib_async client: every type and time in force, brackets, modify, cancel, errors."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from ib_async import LimitOrder, MarketOrder, Order, StopLimitOrder, StopOrder

from apps.brokers.ibsim import IBSimulator
from apps.brokers.ibsim.testing import wait_until
from tests.brokers.ibsim.helpers import ACCOUNT, assert_books_match, stock, wait_done, wait_status


def errors_of(ib: Any) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    ib.errorEvent += lambda req_id, code, *_: seen.append((req_id, code))
    return seen


def test_market_order_fills_at_the_ask_with_execution_commission_and_position(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    quote = ibsim.set_price("AAPL", 190, bid=189.99, ask=190.01)
    trade = ib.placeOrder(contract, MarketOrder("BUY", 100, orderRef="oms-1"))
    wait_done(ib, trade)
    assert trade.orderStatus.status == "Filled"
    assert trade.orderStatus.avgFillPrice == float(quote.ask)
    [fill] = trade.fills
    assert fill.execution.side == "BOT"
    assert fill.execution.orderRef == "oms-1"
    assert fill.commissionReport.commission == 0.35  # 100 × 0.0035 = 0.35, the minimum
    assert [p.position for p in ib.positions()] == [100.0]
    assert wait_until(ib, lambda: ibsim.account(ACCOUNT).cash == Decimal(1_000_000) - Decimal("19001.35"))
    assert_books_match(ib, ibsim)


def test_selling_part_of_a_position_reports_realized_pnl(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 100, bid=100, ask=100)
    wait_done(ib, ib.placeOrder(contract, MarketOrder("BUY", 200)))
    ibsim.set_price("AAPL", 110, bid=110, ask=110.02)
    sell = ib.placeOrder(contract, MarketOrder("SELL", 100))
    wait_done(ib, sell)
    # Bought 200 @ 100 for 0.70 commission → avg 100.0035; sold 100 @ 110 paying 0.35.
    assert wait_until(ib, lambda: sell.fills and sell.fills[0].commissionReport.commission)
    assert sell.fills[0].commissionReport.realizedPNL == pytest.approx(999.3)
    [position] = ib.positions()
    assert position.position == 100
    assert position.avgCost == pytest.approx(100.0035)
    assert_books_match(ib, ibsim)


def test_limit_order_rests_then_fills_at_its_limit_when_crossed(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190, bid=189.99, ask=190.01)
    trade = ib.placeOrder(contract, LimitOrder("BUY", 10, 189.50))
    wait_status(ib, trade, "Submitted")
    ibsim.set_price("AAPL", 189.40, bid=189.30, ask=189.45)
    wait_done(ib, trade)
    assert trade.orderStatus.status == "Filled"
    assert trade.fills[0].execution.price == 189.50
    assert trade.fills[0].execution.lastLiquidity == 1  # added liquidity: the resting order was hit


def test_marketable_limit_fills_at_the_touch(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190, bid=189.99, ask=190.01)
    trade = ib.placeOrder(contract, LimitOrder("BUY", 10, 191))
    wait_done(ib, trade)
    assert trade.fills[0].execution.price == 190.01


def test_stop_triggers_on_last_and_fills_at_the_bid(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190)
    trade = ib.placeOrder(contract, StopOrder("SELL", 10, 185))
    wait_status(ib, trade, "Submitted")
    ibsim.set_price("AAPL", 186)
    ib.sleep(0.02)
    assert trade.orderStatus.status == "Submitted"
    ibsim.set_price("AAPL", 184.90, bid=184.88, ask=184.92)
    wait_done(ib, trade)
    assert trade.fills[0].execution.price == 184.88


def test_stop_limit_triggers_then_waits_for_its_limit(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190)
    trade = ib.placeOrder(contract, StopLimitOrder("BUY", 10, lmtPrice=192.00, stopPrice=191.00))
    wait_status(ib, trade, "Submitted")
    ibsim.set_price("AAPL", 191.50, bid=192.40, ask=192.50)  # triggered, but the ask is above the limit
    ib.sleep(0.02)
    assert trade.orderStatus.status == "Submitted"
    ibsim.set_price("AAPL", 191.90, bid=191.85, ask=191.95)
    wait_done(ib, trade)
    assert trade.fills[0].execution.price == 192.00  # it rested as a limit: traded through at its limit


@pytest.mark.parametrize(
    ("trail", "expected_price"),
    [({"auxPrice": 2.0}, 198.0), ({"trailingPercent": 1.0}, 198.0)],
    ids=["amount", "percent"],
)
def test_trailing_stop_ratchets_up_and_triggers(
    ib: Any, ibsim: IBSimulator, trail: dict[str, float], expected_price: float
) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190)
    trade = ib.placeOrder(contract, Order(action="SELL", totalQuantity=10, orderType="TRAIL", **trail))
    wait_status(ib, trade, "Submitted")
    ibsim.set_price("AAPL", 200)  # stop ratchets to 198 (2.00 or 1 %)
    ibsim.set_price("AAPL", 199)
    ib.sleep(0.02)
    assert trade.orderStatus.status == "Submitted"
    ibsim.set_price("AAPL", 197.99, bid=198.00, ask=198.02)
    wait_done(ib, trade)
    assert trade.fills[0].execution.price == expected_price


@pytest.mark.parametrize(("order_type", "limit", "filled"), [("MOC", None, 10.0), ("LOC", 150.0, 0.0)])
def test_on_close_orders_wait_for_the_closing_auction(
    ib: Any, ibsim: IBSimulator, order_type: str, limit: float | None, filled: float
) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190)
    order = Order(action="BUY", totalQuantity=10, orderType=order_type, lmtPrice=limit)
    trade = ib.placeOrder(contract, order)
    wait_status(ib, trade, "Submitted")
    ibsim.advance(3600)
    assert trade.orderStatus.status == "Submitted"
    ibsim.advance(24 * 3600)  # crosses midnight UTC: the always-open schedule's session close
    wait_done(ib, trade)
    assert trade.orderStatus.filled == filled
    assert trade.orderStatus.status == ("Filled" if filled else "Cancelled")


@pytest.mark.ibsim(schedule="XNYS")
def test_moc_fills_at_the_nyse_close_and_day_orders_expire(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190)
    moc = ib.placeOrder(contract, Order(action="BUY", totalQuantity=5, orderType="MOC"))
    day = ib.placeOrder(contract, LimitOrder("BUY", 5, 100, tif="DAY"))
    gtc = ib.placeOrder(contract, LimitOrder("BUY", 5, 100, tif="GTC"))
    wait_status(ib, gtc, "Submitted")
    ibsim.advance(5.6 * 3600)  # 10:30 → 16:06 New York
    wait_done(ib, moc)
    wait_done(ib, day)
    assert moc.orderStatus.status == "Filled"
    assert moc.fills[0].execution.time.hour == 20  # 16:00 New York is 20:00 UTC in March (EDT)
    assert day.orderStatus.status == "Cancelled"
    assert gtc.orderStatus.status == "Submitted"


@pytest.mark.ibsim(schedule="XNYS")
def test_market_order_outside_hours_is_held_until_the_open(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.advance(7 * 3600)  # 17:30 New York: closed
    trade = ib.placeOrder(contract, MarketOrder("BUY", 5, tif="GTC"))
    wait_status(ib, trade, "PreSubmitted")
    ibsim.advance(16.5 * 3600)  # next day 10:00
    wait_done(ib, trade)
    assert trade.orderStatus.status == "Filled"


def test_ioc_fills_what_is_there_and_cancels_the_rest(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190, size=60)
    trade = ib.placeOrder(contract, MarketOrder("BUY", 100, tif="IOC"))
    wait_done(ib, trade)
    assert trade.orderStatus.status == "Cancelled"
    assert trade.orderStatus.filled == 60
    assert sum(f.execution.shares for f in trade.fills) == 60


def test_fok_that_cannot_fill_completely_does_not_fill_at_all(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190, size=60)
    trade = ib.placeOrder(contract, MarketOrder("BUY", 100, tif="FOK"))
    wait_done(ib, trade)
    assert trade.orderStatus.status == "Cancelled"
    assert trade.fills == []
    assert ibsim.executions() == []


def test_gtd_order_expires_at_its_time(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190)
    order = LimitOrder("BUY", 10, 150, tif="GTD", goodTillDate="20250310 15:00:00 UTC")
    trade = ib.placeOrder(contract, order)
    wait_status(ib, trade, "Submitted")
    ibsim.advance(20 * 60)
    assert trade.orderStatus.status == "Submitted"
    ibsim.advance(20 * 60)
    wait_done(ib, trade)
    assert trade.orderStatus.status == "Cancelled"


def test_bracket_stop_fills_and_cancels_the_take_profit(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190, bid=189.99, ask=190.01)
    parent, take_profit, stop_loss = ib.bracketOrder("BUY", 10, 190.05, 195.00, 185.00)
    trades = [ib.placeOrder(contract, o) for o in (parent, take_profit, stop_loss)]
    wait_done(ib, trades[0])
    wait_status(ib, trades[2], "Submitted")
    assert trades[1].orderStatus.status == "Submitted"
    ibsim.set_price("AAPL", 184.50, bid=184.45, ask=184.55)
    wait_done(ib, trades[2])
    wait_done(ib, trades[1])
    assert [t.orderStatus.status for t in trades] == ["Filled", "Cancelled", "Filled"]
    assert ib.positions() == [] or [p.position for p in ib.positions()] == [0.0]
    assert_books_match(ib, ibsim)


def test_bracket_children_wait_until_the_parent_fills(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190, bid=189.99, ask=190.01)
    parent, take_profit, stop_loss = ib.bracketOrder("BUY", 10, 189.00, 195.00, 185.00)
    trades = [ib.placeOrder(contract, o) for o in (parent, take_profit, stop_loss)]
    wait_status(ib, trades[2], "PreSubmitted")
    assert trades[0].orderStatus.status == "Submitted"
    ibsim.set_price("AAPL", 184.90, bid=184.85, ask=184.95)  # through the stop, which is not live yet
    wait_done(ib, trades[0])
    wait_done(ib, trades[2])  # now live, and already through its stop
    assert trades[2].orderStatus.status == "Filled"


def test_oca_group_cancels_the_others_when_one_fills(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190)
    orders = ib.oneCancelsAll([LimitOrder("BUY", 10, 189), LimitOrder("BUY", 10, 188)], "oca-1", 1)
    trades = [ib.placeOrder(contract, o) for o in orders]
    wait_status(ib, trades[1], "Submitted")
    ibsim.set_price("AAPL", 188.90, bid=188.80, ask=188.95)
    wait_done(ib, trades[0])
    wait_done(ib, trades[1])
    assert [t.orderStatus.status for t in trades] == ["Filled", "Cancelled"]


def test_partial_fills_then_cancel(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190, bid=189.99, ask=190.01, size=100)
    trade = ib.placeOrder(contract, LimitOrder("BUY", 300, 190.05))
    assert wait_until(ib, lambda: trade.orderStatus.filled == 100)
    ibsim.set_price("AAPL", 190, bid=189.99, ask=190.02, size=100)
    assert wait_until(ib, lambda: trade.orderStatus.filled == 200)
    assert trade.orderStatus.status == "Submitted"
    assert trade.orderStatus.remaining == 100
    # 100 at the touch on arrival, then 100 at its limit once it rested (traded through).
    assert trade.orderStatus.avgFillPrice == pytest.approx(190.03)
    errors = errors_of(ib)
    ib.cancelOrder(trade.order)
    wait_done(ib, trade)
    assert trade.orderStatus.status == "Cancelled"
    assert trade.orderStatus.filled == 200
    assert (trade.order.orderId, 202) in errors
    assert [len(trade.fills), sum(f.commissionReport.commission for f in trade.fills)] == [2, pytest.approx(0.70)]
    assert_books_match(ib, ibsim)


def test_modify_then_fill(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190, bid=189.99, ask=190.01)
    order = LimitOrder("BUY", 10, 180)
    trade = ib.placeOrder(contract, order)
    wait_status(ib, trade, "Submitted")
    order.lmtPrice = 190.01
    order.totalQuantity = 20
    ib.placeOrder(contract, order)
    wait_done(ib, trade)
    assert trade.orderStatus.status == "Filled"
    assert trade.orderStatus.filled == 20
    assert any(entry.message == "Modify" for entry in trade.log)
    assert ibsim.order(1, order.orderId).quantity == 20


def test_cancel_errors_202_10147_10148(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190)
    errors = errors_of(ib)
    resting = ib.placeOrder(contract, LimitOrder("BUY", 10, 150))
    wait_status(ib, resting, "Submitted")
    ib.cancelOrder(resting.order)
    wait_done(ib, resting)
    filled = ib.placeOrder(contract, MarketOrder("BUY", 1))
    wait_done(ib, filled)
    ib.cancelOrder(filled.order)
    ib.client.cancelOrder(99_999)
    assert wait_until(ib, lambda: len(errors) >= 3)
    assert errors == [(resting.order.orderId, 202), (filled.order.orderId, 10148), (99_999, 10147)]
    assert filled.orderStatus.status == "Filled"


def test_reused_order_id_is_103_and_modifying_a_filled_order_is_104(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190)
    errors = errors_of(ib)
    first = ib.placeOrder(contract, MarketOrder("BUY", 1))
    wait_done(ib, first)
    ib.client.placeOrder(first.order.orderId, contract, LimitOrder("BUY", 2, 150))  # modify a filled order
    ib.client.placeOrder(first.order.orderId - 1, contract, MarketOrder("BUY", 1))  # lower, unused id
    assert wait_until(ib, lambda: len(errors) >= 2)
    assert errors == [(first.order.orderId, 104), (first.order.orderId - 1, 103)]
    assert len(ibsim.orders()) == 1


def test_buying_power_rule_rejects_with_201_and_changes_nothing(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190)
    ibsim.set_buying_power(ACCOUNT, 10_000)
    errors = errors_of(ib)
    trade = ib.placeOrder(contract, MarketOrder("BUY", 100))  # 19,000 > 10,000
    wait_done(ib, trade)
    assert errors == [(trade.order.orderId, 201)]
    assert trade.orderStatus.status == "Cancelled"  # ib_async's reading of an order error
    assert ibsim.orders() == []
    assert ibsim.account(ACCOUNT).cash == Decimal(1_000_000)


def test_reject_next_and_invalid_tick_and_unknown_contract(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190)
    errors = errors_of(ib)
    ibsim.reject_next(201, "Order rejected - reason:Trading halted")
    halted = ib.placeOrder(contract, MarketOrder("BUY", 1))
    off_tick = ib.placeOrder(contract, LimitOrder("BUY", 1, 190.005))
    unknown = ib.placeOrder(contract.__class__("NOPE", "SMART", "USD"), MarketOrder("BUY", 1))
    for trade in (halted, off_tick, unknown):
        wait_done(ib, trade)
    assert errors == [(halted.order.orderId, 201), (off_tick.order.orderId, 110), (unknown.order.orderId, 200)]
    assert ibsim.orders() == []


def test_what_if_answers_margin_and_commission_without_placing(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190, bid=189.99, ask=190.01)
    state = ib.whatIfOrder(contract, MarketOrder("BUY", 100))
    assert float(state.initMarginChange) == pytest.approx(19001 / 4)
    assert state.commission == 0.35
    assert ibsim.orders() == []
    assert ib.openTrades() == []


def test_global_cancel_cancels_every_client_s_orders(ib: Any, ibsim: IBSimulator) -> None:
    from apps.brokers.ibsim.testing import connect

    other = connect(ibsim, client_id=2)
    try:
        contract = stock(ib)
        ibsim.set_price("AAPL", 190)
        mine = ib.placeOrder(contract, LimitOrder("BUY", 1, 150))
        theirs = other.placeOrder(stock(other), LimitOrder("BUY", 1, 151))
        wait_status(ib, mine, "Submitted")
        wait_status(other, theirs, "Submitted")
        ib.reqGlobalCancel()
        wait_done(ib, mine)
        wait_done(other, theirs)
        assert {o.status for o in ibsim.orders()} == {"Cancelled"}
    finally:
        other.disconnect()


def test_every_tif_reaches_its_ib_state(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190, size=1000)
    expected = {"DAY": "Submitted", "GTC": "Submitted", "IOC": "Cancelled", "FOK": "Cancelled"}
    trades = {tif: ib.placeOrder(contract, LimitOrder("BUY", 10, 150, tif=tif)) for tif in expected}
    gtd = ib.placeOrder(contract, LimitOrder("BUY", 10, 150, tif="GTD", goodTillDate="20250311 00:00:00 UTC"))
    assert wait_until(ib, lambda: all(t.orderStatus.status == expected[k] for k, t in trades.items()))
    wait_status(ib, gtd, "Submitted")
    assert sorted(t.order.orderId for t in ib.openTrades()) == sorted(
        [trades["DAY"].order.orderId, trades["GTC"].order.orderId, gtd.order.orderId]
    )
