"""Order mapping, without a database: every type and TIF, brackets, OCO, refusals, and back."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from apps.brokers.ib.mapping import (
    OCA_CANCEL_WITH_BLOCK,
    IbOrderFields,
    Unmapped,
    from_ib,
    plan_submission,
    spec_from_command,
    to_ib,
)


def item(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "order_id": "o1",
        "client_order_id": "c1",
        "tenant_id": "t",
        "symbol": "AAPL",
        "con_id": 265598,
        "side": "BUY",
        "quantity": "100",
        "order_type": "LMT",
        "limit_price": "187.5",
        "stop_price": None,
        "trail_amount": None,
        "trail_percent": None,
        "time_in_force": "DAY",
        "good_till": None,
        "outside_rth": False,
        "parent_id": None,
        "oca_group": None,
    }
    return base | overrides


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"order_type": "MKT", "limit_price": None}, {"order_type": "MKT", "lmt_price": None}),
        ({}, {"order_type": "LMT", "lmt_price": Decimal("187.5")}),
        ({"order_type": "STP", "limit_price": None, "stop_price": "180"}, {"order_type": "STP", "aux_price": 180}),
        (
            {"order_type": "STP_LMT", "stop_price": "180", "limit_price": "179.5"},
            {"order_type": "STP LMT", "aux_price": 180, "lmt_price": Decimal("179.5")},
        ),
        ({"order_type": "TRAIL", "limit_price": None, "trail_amount": "2"}, {"order_type": "TRAIL", "aux_price": 2}),
        (
            {"order_type": "TRAIL", "limit_price": None, "trail_percent": "1.5"},
            {"order_type": "TRAIL", "trailing_percent": Decimal("1.5"), "aux_price": None},
        ),
        ({"order_type": "MOC", "limit_price": None}, {"order_type": "MOC"}),
        ({"order_type": "LOC"}, {"order_type": "LOC", "lmt_price": Decimal("187.5")}),
        ({"time_in_force": "GTC", "outside_rth": True}, {"tif": "GTC", "outside_rth": True}),
        ({"time_in_force": "IOC"}, {"tif": "IOC"}),
        ({"time_in_force": "FOK"}, {"tif": "FOK"}),
        (
            {"time_in_force": "GTD", "good_till": "2026-11-21T20:00:00Z"},
            {"tif": "GTD", "good_till_date": "20261121 20:00:00 UTC"},
        ),
    ],
)
def test_to_ib_maps_every_type_and_tif(overrides: dict[str, Any], expected: dict[str, Any]) -> None:
    fields = to_ib(spec_from_command(item(**overrides)))
    assert fields.order_ref == "c1"
    assert fields.total_quantity == Decimal(100)
    for name, value in expected.items():
        assert getattr(fields, name) == value, name


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"order_type": "MOC", "limit_price": None, "time_in_force": "GTC"}, "can only be DAY orders at IB"),
        ({"order_type": "LOC", "outside_rth": True}, "outside_rth makes no sense"),
        ({"order_type": "MKT", "limit_price": None, "outside_rth": True}, "market orders outside regular"),
        ({"quantity": "10.5"}, "fractional share quantities"),
        ({"time_in_force": "GTD"}, "good_till is required with GTD"),
        ({"good_till": "2026-11-21T20:00:00Z"}, "good_till is required with GTD and only with GTD"),
        ({"order_type": "TRAIL", "limit_price": None, "trail_amount": "1", "trail_percent": "1"}, "exactly one"),
        ({"order_type": "PEG"}, "order type 'PEG' has no IB equivalent"),
        ({"time_in_force": "OPG"}, "time in force 'OPG' has no IB equivalent"),
        ({"order_type": "STP", "limit_price": None}, "STP orders need stop_price"),
    ],
)
def test_unmapped_combinations_refused_with_reason(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(Unmapped) as refused:
        to_ib(spec_from_command(item(**overrides)))
    assert reason in refused.value.reason


def test_bracket_children_hang_from_parent_and_last_transmits() -> None:
    parent = spec_from_command(item())
    take_profit = spec_from_command(
        item(order_id="o2", client_order_id="c1.tp", side="SELL", limit_price="200", parent_id="o1", oca_group="g")
    )
    stop_loss = spec_from_command(
        item(
            order_id="o3",
            client_order_id="c1.sl",
            side="SELL",
            order_type="STP",
            limit_price=None,
            stop_price="180",
            parent_id="o1",
            oca_group="g",
        )
    )
    planned = plan_submission([parent, take_profit, stop_loss])
    assert [(p.transmit, p.parent_index, p.oca_group) for p in planned] == [
        (False, None, ""),
        (False, 0, "g"),
        (True, 0, "g"),
    ]
    assert planned[1].oca_type == OCA_CANCEL_WITH_BLOCK


def test_oco_legs_are_independent_orders_in_one_group() -> None:
    first = spec_from_command(item(oca_group="g"))
    second = spec_from_command(
        item(
            order_id="o2",
            client_order_id="c1.sl",
            order_type="STP",
            limit_price=None,
            stop_price="195",
            parent_id="o1",
            oca_group="g",
        )
    )
    planned = plan_submission([first, second])
    assert [(p.transmit, p.parent_index, p.oca_group) for p in planned] == [(True, None, "g"), (True, None, "g")]


def test_leg_on_another_instrument_refused() -> None:
    parent = spec_from_command(item())
    leg = spec_from_command(item(order_id="o2", client_order_id="x", con_id=1, symbol="MSFT", parent_id="o1"))
    with pytest.raises(Unmapped, match="another instrument"):
        plan_submission([parent, leg])


def test_from_ib_round_trips_our_fields() -> None:
    spec = spec_from_command(item(order_type="STP_LMT", stop_price="180", limit_price="179.5", time_in_force="GTC"))
    back = from_ib(to_ib(spec))
    assert (back.order_type, back.stop_price, back.limit_price, back.time_in_force, back.client_order_id) == (
        "STP_LMT",
        Decimal(180),
        Decimal("179.5"),
        "GTC",
        "c1",
    )


def test_from_ib_refuses_unknown_type() -> None:
    with pytest.raises(Unmapped, match="REL"):
        from_ib(IbOrderFields(action="BUY", total_quantity=Decimal(1), order_type="REL", tif="DAY", order_ref="x"))


def test_good_till_is_sent_in_utc() -> None:
    spec = spec_from_command(item(time_in_force="GTD", good_till="2026-03-08T01:30:00-05:00"))
    assert spec.good_till == datetime(2026, 3, 8, 6, 30, tzinfo=UTC)
    assert to_ib(spec).good_till_date == "20260308 06:30:00 UTC"
