"""POST /orders: placement, field rules, legs, pre-trade checks, one transaction."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from apps.audit.models import AuditLog
from apps.brokers.models import BrokerAccount, ConnectionStatus
from apps.events.commands import envelope_verify
from apps.events.models import OutboxEvent
from apps.orders.models import Order, OrderEvent
from tests.orders.conftest import order_body


def test_place_limit_order_writes_order_event_outbox_and_audit(
    granted_trader, account, redis_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = granted_trader.api.post("/orders", order_body(account, client_order_id="my-own-id-1"))
    assert response.status_code == 201, response.json_body
    body = response.json_body
    assert body["state"] == "NEW"
    assert body["client_order_id"] == "my-own-id-1"
    assert (body["quantity"], body["filled_quantity"], body["remaining_quantity"]) == ("100", "0", "100")
    assert (body["limit_price"], body["avg_fill_price"], body["version"]) == ("187.5", None, 1)
    assert body["created_at"].endswith("Z")
    order = Order.objects.get(id=body["id"])
    assert [e.kind for e in OrderEvent.objects.filter(order=order)] == ["CREATED"]
    assert list(OutboxEvent.objects.filter(aggregate_id=str(order.id)).values_list("kind", "stream")) == [
        ("order.created", "ev.orders")
    ]
    assert AuditLog.objects.filter(action="order.place", resource_id=str(order.id)).count() == 1
    # Routed after commit: a signed oms.submit on the account's command stream.
    ((_, fields),) = redis_client.xrange(f"cmd.{account.id}")
    envelope = orjson.loads(fields[b"envelope"])
    assert envelope["kind"] == "oms.submit"
    assert envelope_verify(envelope, client=redis_client)["orders"][0]["client_order_id"] == "my-own-id-1"


@pytest.mark.parametrize(
    ("overrides", "errors"),
    [
        ({"order_type": "LMT", "limit_price": None}, {"limit_price": ["required for order type LMT"]}),
        ({"order_type": "MKT"}, {"limit_price": ["not allowed for order type MKT"]}),
        (
            {"order_type": "STP_LMT", "stop_price": None},
            {"stop_price": ["required for order type STP_LMT"]},
        ),
        (
            {"order_type": "TRAIL", "limit_price": None},
            {
                "trail_amount": ["TRAIL needs exactly one of trail_amount and trail_percent"],
                "trail_percent": ["TRAIL needs exactly one of trail_amount and trail_percent"],
            },
        ),
        ({"limit_price": "187.505"}, {"limit_price": ["187.505 is not a multiple of the tick size 0.01"]}),
        ({"limit_price": "0"}, {"limit_price": ["must be greater than 0"]}),
        ({"quantity": "0"}, {"quantity": ["must be greater than 0"]}),
        ({"time_in_force": "GTD"}, {"good_till": ["required when time_in_force is GTD"]}),
        ({"good_till": "2099-01-01T00:00:00Z"}, {"good_till": ["allowed only when time_in_force is GTD"]}),
        (
            {"order_type": "MOC", "limit_price": None, "time_in_force": "GTC"},
            {"time_in_force": ["MOC orders must be DAY"]},
        ),
        ({"take_profit": {"limit_price": "200"}}, {"take_profit": ["not allowed for order_class SIMPLE"]}),
        ({"symbol": "NOPE"}, {"symbol": ["unknown symbol 'NOPE'"]}),
        ({"symbol": "SHOP"}, {"currency": ["required: SHOP trades as NYSE/USD, TSE/CAD"]}),
    ],
)
def test_invalid_orders_are_422_with_field_paths(granted_trader, account, overrides, errors):
    response = granted_trader.api.post("/orders", order_body(account, **overrides))
    assert response.status_code == 422, response.json_body
    assert response.json_body["code"] == "VALIDATION_ERROR"
    assert response.json_body["details"] == errors
    assert not Order.objects.exists()
    assert not OutboxEvent.objects.filter(stream="ev.orders").exists()


def test_fx_lot_size_and_tick(granted_trader, account):
    bad = granted_trader.api.post("/orders", order_body(account, symbol="EUR", quantity="1500", limit_price="1.08503"))
    assert bad.json_body["details"] == {
        "limit_price": ["1.08503 is not a multiple of the tick size 0.00005"],
        "quantity": ["1500 is not a multiple of the lot size 1000"],
    }
    good = granted_trader.api.post("/orders", order_body(account, symbol="EUR", quantity="2000", limit_price="1.08505"))
    assert good.status_code == 201


def test_float_quantity_is_422(granted_trader, account):
    response = granted_trader.api.post("/orders", order_body(account, quantity=100.5))
    assert response.status_code == 422
    assert "quantity" in response.json_body["details"]


def test_every_order_type_places(granted_trader, account):
    cases = [
        {"order_type": "MKT", "limit_price": None},
        {"order_type": "LMT"},
        {"order_type": "STP", "limit_price": None, "stop_price": "180"},
        {"order_type": "STP_LMT", "stop_price": "188"},
        {"order_type": "TRAIL", "limit_price": None, "trail_amount": "1.50"},
        {"order_type": "TRAIL", "limit_price": None, "trail_percent": "2.5"},
        {"order_type": "MOC", "limit_price": None},
        {"order_type": "LOC"},
        {"time_in_force": "GTD", "good_till": "2099-01-01T21:00:00Z"},
        {"time_in_force": "IOC"},
        {"time_in_force": "FOK"},
        {"time_in_force": "GTC", "outside_rth": True},
    ]
    for overrides in cases:
        response = granted_trader.api.post("/orders", order_body(account, **overrides))
        assert response.status_code == 201, (overrides, response.json_body)
    assert Order.objects.count() == len(cases)


def test_bracket_creates_linked_legs(granted_trader, account, redis_client, django_capture_on_commit_callbacks):
    body = order_body(
        account,
        order_class="BRACKET",
        take_profit={"limit_price": "195"},
        stop_loss={"stop_price": "180", "limit_price": "179.5"},
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = granted_trader.api.post("/orders", body)
    assert response.status_code == 201, response.json_body
    parent = response.json_body
    take_profit, stop_loss = parent["legs"]
    assert (take_profit["side"], take_profit["order_type"], take_profit["limit_price"]) == ("SELL", "LMT", "195")
    assert (stop_loss["side"], stop_loss["order_type"], stop_loss["stop_price"]) == ("SELL", "STP_LMT", "180")
    assert take_profit["parent_id"] == stop_loss["parent_id"] == parent["id"]
    assert take_profit["oca_group"] == stop_loss["oca_group"] is not None
    assert take_profit["client_order_id"] == parent["client_order_id"] + ".tp"
    fetched = granted_trader.api.get(f"/orders/{parent['id']}").json_body
    assert [leg["id"] for leg in fetched["legs"]] == [take_profit["id"], stop_loss["id"]]
    assert len(redis_client.xrange(f"cmd.{account.id}")) == 1  # one command carries the three orders


def test_bracket_exit_on_wrong_side_is_422(granted_trader, account):
    body = order_body(
        account, order_class="BRACKET", take_profit={"limit_price": "180"}, stop_loss={"stop_price": "185"}
    )
    response = granted_trader.api.post("/orders", body)
    assert response.status_code == 422
    assert response.json_body["details"] == {
        "take_profit.limit_price": [
            "must be above stop_loss.stop_price for a BUY entry",
            "must be above the entry limit_price",
        ]
    }


def test_oco_and_oto(granted_trader, account):
    oco = granted_trader.api.post(
        "/orders",
        order_body(account, side="SELL", limit_price="195", order_class="OCO", stop_loss={"stop_price": "180"}),
    ).json_body
    assert oco["oca_group"] == oco["legs"][0]["oca_group"] is not None
    assert oco["legs"][0]["side"] == "SELL"
    oto = granted_trader.api.post(
        "/orders", order_body(account, order_class="OTO", take_profit={"limit_price": "195"})
    ).json_body
    assert oto["oca_group"] is None
    assert oto["legs"][0]["parent_id"] == oto["id"]
    bad = granted_trader.api.post("/orders", order_body(account, order_class="OTO"))
    assert bad.json_body["details"] == {
        "order_class": ["OTO needs exactly one of take_profit and stop_loss (the triggered order)"]
    }


def test_duplicate_client_order_id_is_409(granted_trader, account):
    assert granted_trader.api.post("/orders", order_body(account, client_order_id="dup")).status_code == 201
    response = granted_trader.api.post("/orders", order_body(account, client_order_id="dup", quantity="5"))
    assert response.status_code == 409
    assert response.json_body["details"] == {"client_order_id": "dup"}
    assert Order.objects.count() == 1


def test_halted_account_refuses_orders(granted_trader, account):
    BrokerAccount.objects.filter(id=account.id).update(status=ConnectionStatus.HALTED, status_reason="ops halt")
    response = granted_trader.api.post("/orders", order_body(account))
    assert response.status_code == 409
    assert response.json_body["message"] == "Broker account PAPER1 is HALTED: ops halt"
    assert not Order.objects.exists()


def test_ungranted_trader_gets_404_and_viewer_403(trader, viewer, account):
    response = trader.api.post("/orders", order_body(account))
    assert response.status_code == 404
    assert viewer.api.post("/orders", order_body(account)).status_code == 403
    assert not Order.objects.exists()


def test_other_tenants_account_is_404(admin, other_tenant, instruments):
    from tests.orders.conftest import make_account

    foreign = make_account(other_tenant, "FOREIGN")
    assert admin.api.post("/orders", order_body(foreign)).status_code == 404
    assert not Order.objects.exists()


def test_preview_evaluates_every_gate(manager, account):
    BrokerAccount.objects.filter(id=account.id).update(status=ConnectionStatus.HALTED)
    response = manager.api.post("/orders/preview", order_body(account, limit_price="187.505"))
    assert response.status_code == 200
    body = response.json_body
    assert body["accepted"] is False
    # The order's own gates first; the risk and compliance gates follow (tests/risk).
    assert [(c["gate"], c["passed"]) for c in body["checks"][:4]] == [
        ("validation", False),
        ("instrument", True),
        ("account", False),
        ("connection", True),
    ]
    assert not Order.objects.exists()


def test_unknown_body_field_is_422(granted_trader, account):
    response = granted_trader.api.post("/orders", order_body(account, colour="red"))
    assert response.status_code == 422
    assert response.json_body["details"] == {"colour": ["unknown field"]}


def test_amounts_are_decimals_end_to_end(granted_trader, account):
    body = granted_trader.api.post("/orders", order_body(account, quantity=300, limit_price="187.10")).json_body
    order = Order.objects.get(id=body["id"])
    assert order.quantity == Decimal(300)
    assert order.limit_price == Decimal("187.10")
    assert body["limit_price"] == "187.1"
