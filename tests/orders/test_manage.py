"""Listing, ETag / If-Match modifications, cancels, batches, events and executions."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from apps.orders.models import Execution, Order, OrderEvent
from apps.orders.services.lifecycle import order_move
from apps.orders.state import OrderState
from tests.orders.conftest import SYSTEM, make_account, order_body


def place(member, account, **overrides):
    response = member.api.post("/orders", order_body(account, **overrides))
    assert response.status_code == 201, response.json_body
    return response.json_body


def route(order_id):
    order = Order.objects.get(id=order_id)
    order_move(order=order, to=OrderState.ROUTED, actor=SYSTEM, reason="broker acknowledged")
    return order


def test_list_filters_pagination_and_fields(manager, account):
    first = place(manager, account, symbol="AAPL", side="BUY")
    second = place(manager, account, symbol="SPY", side="SELL", limit_price="500")
    third = place(manager, account, symbol="SPY", side="BUY", limit_price="501")
    items = manager.api.get("/orders").json_body["items"]
    assert [item["id"] for item in items] == [third["id"], second["id"], first["id"]]
    assert [o["id"] for o in manager.api.get("/orders?symbol=SPY&side=SELL").json_body["items"]] == [second["id"]]
    page = manager.api.get("/orders?limit=2").json_body
    assert [o["id"] for o in page["items"]] == [third["id"], second["id"]]
    rest = manager.api.get(f"/orders?limit=2&cursor={page['next']}").json_body
    assert ([o["id"] for o in rest["items"]], rest["next"]) == ([first["id"]], None)
    sparse = manager.api.get("/orders?fields=id,state&state=NEW&limit=1").json_body["items"]
    assert sparse == [{"id": third["id"], "state": "NEW"}]
    later = (timezone.now() + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    assert manager.api.get(f"/orders?created_after={later}").json_body["items"] == []
    assert manager.api.get(f"/orders?account_id={account.id}&limit=500").status_code == 200
    assert manager.api.get("/orders?colour=red").status_code == 422
    assert manager.api.get("/orders?state=DONE").status_code == 422
    assert manager.api.get("/orders?limit=501").status_code == 422


def test_trader_lists_only_granted_accounts_orders(tenant, manager, granted_trader, account):
    hidden_account = make_account(tenant, "HIDDEN")
    hidden = place(manager, hidden_account)
    visible = place(manager, account)
    assert [o["id"] for o in granted_trader.api.get("/orders").json_body["items"]] == [visible["id"]]
    assert granted_trader.api.get(f"/orders/{hidden['id']}").status_code == 404
    assert granted_trader.api.post(f"/orders/{hidden['id']}/cancel").status_code == 404
    assert Order.objects.get(id=hidden["id"]).state == "NEW"


def test_get_has_etag_and_patch_needs_if_match(manager, account):
    order = place(manager, account)
    response = manager.api.get(f"/orders/{order['id']}")
    assert response["ETag"] == '"1"'
    missing = manager.api.patch(f"/orders/{order['id']}", {"limit_price": "186"})
    assert missing.status_code == 428
    assert missing.json_body["code"] == "PRECONDITION_REQUIRED"
    stale = manager.api.patch(f"/orders/{order['id']}", {"limit_price": "186"}, headers={"If-Match": '"7"'})
    assert stale.status_code == 409
    assert stale.json_body["details"] == {"version": 1, "if_match": 7}
    assert Order.objects.get(id=order["id"]).limit_price == Decimal("187.50")
    ok = manager.api.patch(f"/orders/{order['id']}", {"limit_price": "186"}, headers={"If-Match": '"1"'})
    assert ok.status_code == 200, ok.json_body
    assert (ok.json_body["state"], ok.json_body["limit_price"], ok.json_body["version"]) == ("NEW", "186", 2)
    assert ok["ETag"] == '"2"'


def test_patch_routed_order_goes_pending_modify(manager, account):
    order = place(manager, account)
    route(order["id"])
    response = manager.api.patch(f"/orders/{order['id']}", {"quantity": "150"}, headers={"If-Match": '"2"'})
    assert response.status_code == 200, response.json_body
    assert (response.json_body["state"], response.json_body["quantity"]) == ("PENDING_MODIFY", "150")
    again = manager.api.patch(f"/orders/{order['id']}", {"quantity": "160"}, headers={"If-Match": '"3"'})
    assert again.status_code == 409
    assert (
        again.json_body["message"]
        == "Order in state PENDING_MODIFY cannot be modified: a modification is already pending"
    )


def test_patch_validates_tick_and_forbidden_fields(manager, account):
    order = place(manager, account)
    bad = manager.api.patch(
        f"/orders/{order['id']}", {"limit_price": "186.001", "stop_price": "1"}, headers={"If-Match": '"1"'}
    )
    assert bad.status_code == 422
    assert bad.json_body["details"] == {
        "limit_price": ["186.001 is not a multiple of the tick size 0.01"],
        "stop_price": ["not allowed for order type LMT"],
    }
    nothing = manager.api.patch(f"/orders/{order['id']}", {"limit_price": "187.50"}, headers={"If-Match": '"1"'})
    assert nothing.status_code == 422
    assert Order.objects.get(id=order["id"]).version == 1


def test_cancel_new_is_canceled_routed_is_pending_and_terminal_is_409(manager, account):
    new = place(manager, account)
    response = manager.api.post(f"/orders/{new['id']}/cancel")
    assert response.status_code == 202
    assert (response.json_body["state"], response.json_body["remaining_quantity"]) == ("CANCELED", "0")
    assert response.json_body["closed_at"] is not None
    again = manager.api.post(f"/orders/{new['id']}/cancel")
    assert again.status_code == 409
    assert again.json_body["code"] == "STATE_CONFLICT"
    routed = place(manager, account)
    route(routed["id"])
    assert manager.api.post(f"/orders/{routed['id']}/cancel").json_body["state"] == "PENDING_CANCEL"
    assert manager.api.post(f"/orders/{routed['id']}/cancel").json_body["state"] == "PENDING_CANCEL"


def test_cancel_bracket_parent_cancels_legs(manager, account):
    parent = place(
        manager, account, order_class="BRACKET", take_profit={"limit_price": "195"}, stop_loss={"stop_price": "180"}
    )
    manager.api.post(f"/orders/{parent['id']}/cancel")
    assert set(Order.objects.values_list("state", flat=True)) == {"CANCELED"}


def test_events_oldest_first(manager, account):
    order = place(manager, account)
    manager.api.patch(f"/orders/{order['id']}", {"quantity": "50"}, headers={"If-Match": '"1"'})
    manager.api.post(f"/orders/{order['id']}/cancel")
    events = manager.api.get(f"/orders/{order['id']}/events").json_body["items"]
    assert [(e["seq"], e["kind"], e["from_state"], e["to_state"]) for e in events] == [
        (1, "CREATED", None, "NEW"),
        (2, "MODIFIED", "NEW", "NEW"),
        (3, "STATE", "NEW", "CANCELED"),
    ]


def test_order_events_are_append_only(manager, account):
    import pytest
    from django.db import DatabaseError, transaction

    order = place(manager, account)
    with pytest.raises(DatabaseError), transaction.atomic():
        OrderEvent.objects.filter(order_id=order["id"]).update(kind="FORGED")
    assert OrderEvent.objects.get(order_id=order["id"]).kind == "CREATED"


def test_batch_place_each_item_on_its_own(manager, account):
    orders = [
        order_body(account),
        order_body(account, limit_price="1.001"),
        order_body(account, quantity=1.5),
        order_body(account, symbol="SPY", limit_price="500"),
    ]
    response = manager.api.post("/orders/batch", {"orders": orders})
    assert response.status_code == 200, response.json_body
    results = response.json_body["results"]
    assert [(r["index"], r["status"]) for r in results] == [(0, 201), (1, 422), (2, 422), (3, 201)]
    assert results[1]["error"]["details"] == {"limit_price": ["1.001 is not a multiple of the tick size 0.01"]}
    assert "quantity" in results[2]["error"]["details"]
    assert Order.objects.count() == 2
    too_many = manager.api.post("/orders/batch", {"orders": [order_body(account)] * 101})
    assert too_many.status_code == 422


def test_batch_cancel(manager, other_tenant, account):
    one, two = place(manager, account), place(manager, account)
    manager.api.post(f"/orders/{two['id']}/cancel")
    missing = uuid.uuid4()
    response = manager.api.post("/orders/batch/cancel", {"ids": [one["id"], two["id"], str(missing)]})
    results = response.json_body["results"]
    assert [(r["index"], r["status"]) for r in results] == [(0, 202), (1, 409), (2, 404)]
    assert results[0]["order"]["state"] == "CANCELED"


def test_executions_listed_per_order_and_tenant(manager, account, other_tenant):
    order = place(manager, account)
    now = timezone.now()
    Execution.objects.create(
        tenant_id=manager.tenant.id,
        order_id=order["id"],
        account_id=account.id,
        symbol="AAPL",
        side="BUY",
        broker_exec_id="0001.01",
        quantity=Decimal(40),
        price=Decimal("187.45"),
        commission=Decimal("0.35"),
        currency="USD",
        executed_at=now,
        created_at=now,
    )
    items = manager.api.get(f"/orders/{order['id']}/executions").json_body["items"]
    assert [(i["broker_exec_id"], i["quantity"], i["price"], i["commission"]) for i in items] == [
        ("0001.01", "40", "187.45", "0.35")
    ]
    assert len(manager.api.get("/executions").json_body["items"]) == 1
    from tests.conftest import make_member

    outsider = make_member(other_tenant)
    assert outsider.api.get("/executions").json_body["items"] == []
    assert outsider.api.get(f"/orders/{order['id']}/executions").status_code == 404
