"""Faults IB really produces, switched on by tests: outages, drops, restarts, delays, duplicates, races."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from ib_async import IB, LimitOrder, MarketOrder

from apps.brokers.ibsim import IBSimulator
from apps.brokers.ibsim.testing import connect, running_simulator, wait_until
from tests.brokers.ibsim.helpers import assert_books_match, stock, wait_done, wait_status


def codes(ib: Any) -> list[int]:
    seen: list[int] = []
    ib.errorEvent += lambda _req, code, *_: seen.append(code)
    return seen


@pytest.mark.parametrize(("data_lost", "restored"), [(True, 1101), (False, 1102)])
def test_backend_outage_keeps_the_socket_and_stops_data(
    ib: Any, ibsim: IBSimulator, data_lost: bool, restored: int
) -> None:
    contract = stock(ib)
    ticker = ib.reqMktData(contract)
    ibsim.set_price("AAPL", 190)
    assert wait_until(ib, lambda: ticker.last == 190.0)
    errors = codes(ib)
    ibsim.backend_down(data_lost=data_lost)
    assert wait_until(ib, lambda: errors == [1100])
    trade = ib.placeOrder(contract, MarketOrder("BUY", 1))
    wait_status(ib, trade, "Submitted")
    ibsim.advance(5)
    ib.sleep(0.02)
    assert trade.orderStatus.status == "Submitted"  # no market, no fills
    assert ib.isConnected()
    ibsim.backend_up()
    assert wait_until(ib, lambda: errors == [1100, restored])
    ibsim.set_price("AAPL", 191)
    wait_done(ib, trade)  # the order was kept and fills once the market is back
    ib.sleep(0.02)
    assert (ticker.last == 191.0) is not data_lost  # data lost: the client must re-subscribe


def test_disconnect_mid_fill_burst_then_reconnect_recovers_everything(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190, bid=189.99, ask=190.01, size=100)
    big = ib.placeOrder(contract, LimitOrder("BUY", 1000, 190.50))
    done_before = ib.placeOrder(contract, MarketOrder("SELL", 10))
    resting = ib.placeOrder(contract, LimitOrder("BUY", 5, 150))
    filled_while_away = ib.placeOrder(contract, LimitOrder("SELL", 7, 195))
    wait_status(ib, filled_while_away, "Submitted")
    wait_done(ib, done_before)
    for _ in range(3):
        ibsim.set_price("AAPL", 190, bid=189.99, ask=190.01, size=100)
    ibsim.drop_connections()
    for _ in range(4):  # fills keep coming while nobody listens
        ibsim.set_price("AAPL", 190, bid=189.99, ask=190.01, size=100)
    ibsim.set_price("AAPL", 195.5, bid=195.40, ask=195.60, size=100)
    assert wait_until(ib, lambda: not ib.isConnected())

    again = connect(ibsim, client_id=1)
    try:
        held = {o.perm_id: o for o in ibsim.orders()}
        assert (
            {t.order.permId for t in again.openTrades()}
            == {p for p, o in held.items() if not o.is_done}
            == {big.order.permId, resting.order.permId}
        )
        completed = again.reqCompletedOrders(apiOnly=False)
        assert {t.order.permId: t.orderStatus.status for t in completed} == {
            p: o.status for p, o in held.items() if o.is_done
        }
        assert held[filled_while_away.order.permId].status == "Filled"
        open_big = next(t for t in again.openTrades() if t.order.permId == big.order.permId)
        assert open_big.orderStatus.filled == float(held[big.order.permId].filled) == 800
        assert_books_match(again, ibsim)
    finally:
        again.disconnect()


def test_refused_connections_during_a_restart(ib: Any, ibsim: IBSimulator) -> None:
    ibsim.refuse_connections(0.3)
    assert wait_until(ib, lambda: not ib.isConnected())
    with pytest.raises(ConnectionRefusedError):
        IB().connect(ibsim.host, ibsim.port, clientId=3, timeout=0.5)
    time.sleep(0.35)
    again = connect(ibsim, client_id=1)
    assert again.isConnected()
    again.disconnect()


def test_delayed_acknowledgements(ib: Any, ibsim: IBSimulator) -> None:
    ibsim.delay_acks(0.2)
    trade = ib.placeOrder(stock(ib), LimitOrder("BUY", 1, 150))
    ib.sleep(0.1)
    assert trade.orderStatus.status == "PendingSubmit"
    wait_status(ib, trade, "Submitted")


def test_duplicate_order_status_messages(ib: Any, ibsim: IBSimulator) -> None:
    calls: list[str] = []
    original = ib.wrapper.orderStatus

    def counting(order_id: int, status: str, *args: Any) -> None:
        calls.append(status)
        original(order_id, status, *args)

    ib.wrapper.orderStatus = counting
    ibsim.duplicate_status()
    trade = ib.placeOrder(stock(ib), MarketOrder("BUY", 1))
    wait_done(ib, trade)
    assert wait_until(ib, lambda: len(calls) == 4)
    assert calls == ["Submitted", "Submitted", "Filled", "Filled"]
    assert len(trade.fills) == 1


def test_commission_before_execution_is_lost_by_ib_async(ib: Any, ibsim: IBSimulator) -> None:
    ibsim.commission_before_execution()
    trade = ib.placeOrder(stock(ib), MarketOrder("BUY", 1))
    wait_done(ib, trade)
    ib.sleep(0.02)
    assert trade.fills[0].commissionReport.commission == 0.0  # ib_async dropped the early report
    assert ibsim.executions()[0].commission > 0


def test_late_fill_after_a_cancel_request(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190)
    trade = ib.placeOrder(contract, LimitOrder("BUY", 10, 150))
    wait_status(ib, trade, "Submitted")
    errors = codes(ib)
    ibsim.late_fills(quantity=4)
    ib.cancelOrder(trade.order)
    wait_done(ib, trade)
    assert wait_until(ib, lambda: trade.orderStatus.filled == 4)
    assert trade.orderStatus.status == "Cancelled"
    assert errors == [202]
    assert [f.execution.shares for f in trade.fills] == [4.0]
    assert_books_match(ib, ibsim)


def test_state_file_keeps_the_books_across_a_restart(tmp_path: Path) -> None:
    state_file = str(tmp_path / "ibsim.json")
    with running_simulator(state_file=state_file) as sim:
        ib = connect(sim)
        contract = stock(ib)
        sim.set_price("AAPL", 190)
        filled = ib.placeOrder(contract, MarketOrder("BUY", 10))
        resting = ib.placeOrder(contract, LimitOrder("BUY", 5, 150))
        wait_status(ib, resting, "Submitted")
        wait_done(ib, filled)
        ib.disconnect()
    assert Path(state_file).exists()
    with running_simulator(state_file=state_file) as sim:
        ib = connect(sim)
        try:
            assert [(p.contract.conId, p.position) for p in ib.positions()] == [(265598, 10.0)]
            assert [t.order.permId for t in ib.openTrades()] == [resting.order.permId]
            assert [f.execution.permId for f in ib.fills()] == [filled.order.permId]
            assert ib.client.getReqId() > resting.order.orderId
            sim.set_price("AAPL", 149.5, bid=149.4, ask=149.6)
            [trade] = ib.openTrades()
            wait_done(ib, trade)
            assert trade.orderStatus.status == "Filled"
            assert_books_match(ib, sim)
        finally:
            ib.disconnect()


def test_http_control_surface_drives_the_simulator() -> None:
    import json
    import urllib.request

    with running_simulator(control_port=0) as sim:
        base = f"http://127.0.0.1:{sim.control.port}"
        request = urllib.request.Request(f"{base}/price", data=json.dumps({"symbol": "AAPL", "last": 191.5}).encode())
        with urllib.request.urlopen(request, timeout=2) as response:
            assert json.loads(response.read())["ok"] is True
        assert sim.quote("AAPL").last == Decimal("191.5")
        with urllib.request.urlopen(f"{base}/state", timeout=2) as response:
            state = json.loads(response.read())
        assert state["orders"] == [] and state["faults"]["rate_limit"] is True
