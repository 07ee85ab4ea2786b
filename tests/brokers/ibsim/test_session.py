"""Sessions with the real ib_async client: handshake, startup, client ids, master client, rate limit."""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

import pytest
from ib_async import IB, LimitOrder, MarketOrder

from apps.brokers.ibsim import IBSimulator
from apps.brokers.ibsim.testing import connect, running_simulator, wait_until
from tests.brokers.ibsim.helpers import ACCOUNT, stock, wait_done, wait_status


def test_connect_and_startup_within_half_a_second(ibsim: IBSimulator) -> None:
    started = time.perf_counter()
    ib = connect(ibsim, client_id=7)
    elapsed = time.perf_counter() - started
    try:
        assert elapsed < 0.5
        assert ib.client.serverVersion() == 178
        assert ib.managedAccounts() == [ACCOUNT]
        assert {v.tag for v in ib.accountValues()} >= {"NetLiquidation", "TotalCashValue", "BuyingPower"}
        assert ib.reqCurrentTime().timestamp() == ibsim.now().timestamp() // 1
    finally:
        ib.disconnect()


@pytest.mark.ibsim(accounts=("DU1000001", "DU1000002"))
def test_two_accounts_use_account_updates_multi(ibsim: IBSimulator) -> None:
    ib = connect(ibsim)
    try:
        assert ib.managedAccounts() == ["DU1000001", "DU1000002"]
        assert {v.account for v in ib.accountValues()} == {"DU1000001", "DU1000002"}
        summary = ib.accountSummary()
        assert {(v.account, v.tag) for v in summary if v.tag == "NetLiquidation"} == {
            ("DU1000001", "NetLiquidation"),
            ("DU1000002", "NetLiquidation"),
        }
        trade = ib.placeOrder(stock(ib), MarketOrder("BUY", 5, account="DU1000002"))
        wait_done(ib, trade)
        assert [(p.account, p.position) for p in ib.positions()] == [("DU1000002", 5.0)]
    finally:
        ib.disconnect()


def test_a_client_id_in_use_is_refused_with_326(ib: Any, ibsim: IBSimulator) -> None:
    second = IB()
    errors: list[int] = []
    second.errorEvent += lambda _req, code, *_: errors.append(code)
    with pytest.raises((TimeoutError, ConnectionError)):
        second.connect(ibsim.host, ibsim.port, clientId=1, timeout=0.5)
    assert errors == [326]
    assert ib.isConnected()


def test_two_clients_see_their_own_orders_and_the_master_sees_all(ib: Any, ibsim: IBSimulator) -> None:
    other = connect(ibsim, client_id=2)
    try:
        ibsim.set_price("AAPL", 190)
        mine = ib.placeOrder(stock(ib), LimitOrder("BUY", 1, 150))
        theirs = other.placeOrder(stock(other), LimitOrder("BUY", 2, 151))
        wait_status(ib, mine, "Submitted")
        wait_status(other, theirs, "Submitted")
        assert [t.order.permId for t in ib.openTrades()] == [mine.order.permId]
        assert [t.order.permId for t in other.openTrades()] == [theirs.order.permId]
        master = connect(ibsim, client_id=0)
        try:
            assert sorted(t.order.permId for t in master.openTrades()) == sorted(
                [mine.order.permId, theirs.order.permId]
            )
            ib.cancelOrder(mine.order)
            key = (1, mine.order.orderId)
            assert wait_until(master, lambda: master.wrapper.trades[key].orderStatus.status == "Cancelled")
            assert sorted(t.order.permId for t in ib.reqAllOpenOrders()) == [theirs.order.permId]
        finally:
            master.disconnect()
    finally:
        other.disconnect()


def test_order_ids_continue_after_reconnect(ib: Any, ibsim: IBSimulator) -> None:
    trade = ib.placeOrder(stock(ib), MarketOrder("BUY", 1))
    wait_done(ib, trade)
    ib.disconnect()
    again = connect(ibsim, client_id=1)
    try:
        assert again.client.getReqId() > trade.order.orderId
    finally:
        again.disconnect()


def test_rate_limit_answers_100_then_disconnects(ib: Any, ibsim: IBSimulator) -> None:
    ib.client.MaxRequests = 0  # switch ib_async's own throttle off
    errors: list[int] = []
    ib.errorEvent += lambda _req, code, *_: errors.append(code)
    for _ in range(60):
        ib.client.reqCurrentTime()
    assert wait_until(ib, lambda: 100 in errors)
    assert ib.isConnected()
    ib.sleep(1.05)  # a new one-second window
    for _ in range(150):
        ib.client.reqCurrentTime()
    assert wait_until(ib, lambda: not ib.isConnected())


def test_rate_limit_off_lets_bursts_through(ib: Any, ibsim: IBSimulator) -> None:
    ibsim.rate_limit(False)
    ib.client.MaxRequests = 0
    times: list[Any] = []
    ib.wrapper.currentTime = lambda t: times.append(t)
    for _ in range(200):
        ib.client.reqCurrentTime()
    assert wait_until(ib, lambda: len(times) == 200)
    assert ib.isConnected()


def _raw_hello(port: int, versions: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"API\0" + struct.pack(">I", len(versions)) + versions)
        return sock.recv(1024)


def test_handshake_negotiates_down_and_refuses_out_of_range_clients() -> None:
    with running_simulator(server_version=176) as sim:
        reply = _raw_hello(sim.port, b"v157..178")
        assert reply[4:].split(b"\0")[0] == b"176"
        assert _raw_hello(sim.port, b"v177..178") == b""  # server too old for this client: closed


def test_old_server_version_is_refused_by_ib_async() -> None:
    with running_simulator(server_version=150) as sim:
        ib = IB()
        with pytest.raises((ConnectionError, TimeoutError)):
            ib.connect(sim.host, sim.port, clientId=1, timeout=0.5)
        assert not ib.isConnected()


def test_unknown_message_id_is_recorded_as_a_protocol_error(ib: Any, ibsim: IBSimulator) -> None:
    ib.client.send(240, 1, "mystery")
    assert wait_until(ib, lambda: ibsim.protocol_errors)
    assert "unknown message id 240" in ibsim.take_protocol_errors()[0]
