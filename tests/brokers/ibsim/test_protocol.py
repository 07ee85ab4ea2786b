"""Wire-level units: framing, the placeOrder walk against ib_async's own encoder, state and positions."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from ib_async import LimitOrder, MarketOrder, Order, PriceCondition, Stock, TagValue, TimeCondition
from ib_async.client import Client

from apps.brokers.ibsim.protocol import ProtocolError, encode, parse_fields, parse_version_range, split_frames
from apps.brokers.ibsim.requests import parse_place_order
from apps.brokers.ibsim.state import BrokerState, SimAccount, SimOrder, SimPosition

D = Decimal


def encoded_by_ib_async(order: Order, contract: Any = None, version: int = 178) -> list[str]:
    """The fields ib_async itself would put on the wire for this placeOrder."""
    sent: list[str] = []
    client = Client(wrapper=object())
    client._serverVersion = version
    client.connState = Client.CONNECTED
    client.sendMsg = sent.append  # type: ignore[method-assign]
    client.placeOrder(42, contract or Stock("AAPL", "SMART", "USD"), order)
    return parse_fields(sent[0].encode())


def test_place_order_walk_reads_the_fields_after_every_optional_block() -> None:
    order = LimitOrder(
        "SELL",
        150,
        190.25,
        tif="GTD",
        goodTillDate="20250311 16:00:00 US/Eastern",
        orderRef="oms-7",
        transmit=False,
        parentId=41,
        outsideRth=True,
        ocaGroup="g",
        ocaType=2,
        account="DU1000001",
        algoStrategy="Adaptive",
        algoParams=[TagValue("adaptivePriority", "Normal")],
        conditions=[PriceCondition(price=200, conId=265598, exch="SMART"), TimeCondition(time="20250311 10:00:00")],
        orderMiscOptions=[TagValue("a", "b")],
    )
    request = parse_place_order(encoded_by_ib_async(order), 178)
    assert (request.order_id, request.action, request.quantity, request.order_type) == (42, "SELL", D(150), "LMT")
    assert (request.limit_price, request.aux_price, request.tif) == (D("190.25"), None, "GTD")
    assert (request.transmit, request.parent_id, request.outside_rth) == (False, 41, True)
    assert (request.oca_group, request.oca_type, request.order_ref, request.account) == ("g", 2, "oms-7", "DU1000001")
    assert request.good_till_date == "20250311 16:00:00 US/Eastern"
    assert request.contract.symbol == "AAPL"
    assert request.what_if is False


@pytest.mark.parametrize("version", [157, 166, 176, 178])
def test_place_order_walk_at_each_version(version: int) -> None:
    order = Order(action="BUY", totalQuantity=3, orderType="TRAIL", trailingPercent=1.5, whatIf=True)
    request = parse_place_order(encoded_by_ib_async(order, version=version), version)
    assert (request.order_type, request.trailing_percent, request.what_if) == ("TRAIL", D("1.5"), True)


def test_place_order_with_extra_fields_is_a_protocol_error() -> None:
    fields = encoded_by_ib_async(MarketOrder("BUY", 1))
    with pytest.raises(ProtocolError, match="trailing"):
        parse_place_order([*fields, "surplus"], 178)


def test_framing_round_trip_and_partial_frames() -> None:
    data = bytearray(encode((9, 1, 7)) + encode((15, 1, "DU1,DU2")))
    partial = bytearray(data[:-3])
    assert [parse_fields(p) for p in split_frames(partial)] == [["9", "1", "7"]]
    assert len(partial) == len(encode((15, 1, "DU1,DU2"))) - 3
    assert [parse_fields(p) for p in split_frames(data)] == [["9", "1", "7"], ["15", "1", "DU1,DU2"]]
    assert data == bytearray()
    assert parse_version_range(b"v157..178 +PACEAPI") == (157, 178, "+PACEAPI")
    assert encode((D("190.0100"), True, None)) == encode(("190.01", "1", ""))


def test_position_average_cost_includes_commission_and_crossing_zero_splits() -> None:
    position = SimPosition(account="A", con_id=1)
    assert position.apply("BUY", D(100), D(10), D(1)) is None
    assert position.average_cost == D("10.01")
    realized = position.apply("SELL", D(150), D(12), D(3))  # closes 100, opens a 50 short
    assert realized == D(100) * (D(12) - D("10.01")) - D(2)
    assert (position.quantity, position.average_cost) == (D(-50), (D(600) - D(1)) / D(50))


def test_state_json_round_trip() -> None:
    state = BrokerState(accounts={"A": SimAccount(code="A", cash=D("12.5"))})
    order = SimOrder(
        perm_id=5,
        client_id=1,
        order_id=9,
        account="A",
        con_id=265598,
        action="BUY",
        quantity=D(10),
        order_type="LMT",
        limit_price=D("1.5"),
        aux_price=None,
        tif="DAY",
        created_at=datetime(2025, 3, 10, tzinfo=UTC),
    )
    state.add_order(order)
    state.position("A", 265598).apply("BUY", D(1), D(2), D(0))
    state.last_order_ids[1] = 9
    loaded = BrokerState.from_json(state.to_json())
    assert loaded.orders == state.orders
    assert loaded.positions == state.positions
    assert loaded.accounts == state.accounts
    assert loaded.order_for(1, 9) == order
    assert loaded.last_order_ids == {1: 9}
