"""Positions from executions (through the broker-event applier), `/positions` and `/positions/{symbol}`."""

from __future__ import annotations

from decimal import Decimal

from django.utils import timezone

from apps.audit.models import AuditLog
from apps.events.models import OutboxEvent
from apps.events.prices import LastPrice, last_price_set
from apps.orders.models import Order
from apps.orders.services.broker_events import BrokerEvent, Fill, broker_event_apply
from apps.portfolio.models import Position
from apps.tenants.scopes import Role
from tests.conftest import make_member
from tests.orders.conftest import make_account
from tests.orders.test_manage import place

D = Decimal


def fill_order(order_id, exec_id, quantity, price, commission="1"):
    order = Order.objects.get(id=order_id)
    if order.state == "NEW":
        broker_event_apply(event=BrokerEvent(kind="accepted", account_id=order.account_id, order_id=order.id))
    fill = Fill(exec_id, D(quantity), D(price), D(commission), "USD", timezone.now())
    return broker_event_apply(
        event=BrokerEvent(kind="execution", account_id=order.account_id, order_id=order.id, fill=fill)
    )


def trade(member, account, side, quantity, price, exec_id, symbol="AAPL"):
    order = place(member, account, side=side, quantity=quantity, limit_price=price, symbol=symbol)
    fill_order(order["id"], exec_id, quantity, price)
    return order


def set_price(redis_client, instrument, last):
    price = LastPrice(last=D(last), bid=None, ask=None, bid_size=None, ask_size=None, at=None, source="test")
    last_price_set(client=redis_client, instrument_id=instrument.id, price=price)


def test_executions_move_the_position_with_event_and_audit(manager, account, instruments):
    trade(manager, account, "BUY", "100", "10", "x1")
    trade(manager, account, "SELL", "40", "12", "x2")
    position = Position.objects.get(account=account, instrument=instruments["AAPL"])
    # Bought at 10 + 0.01 commission per share; sold 40 at 12 with 1 commission.
    assert (position.quantity, position.avg_cost, position.realized_pnl) == (D(60), D("10.01"), D("78.6"))
    assert (position.realized_today, position.executions, position.version) == (D("78.6"), 2, 2)
    events = OutboxEvent.objects.filter(kind="position.updated").order_by("seq")
    assert [(e.payload["quantity"], e.payload["exec_id"]) for e in events] == [("100", "x1"), ("60", "x2")]
    assert events[1].stream == "ev.positions"
    assert AuditLog.objects.filter(action="position.execution_applied", resource_id=str(position.id)).count() == 2


def test_replayed_execution_leaves_the_position_alone(manager, account, instruments):
    order = trade(manager, account, "BUY", "100", "10", "once")
    before = Position.objects.get(account=account).__dict__.copy()
    events = OutboxEvent.objects.count()
    fill_order(order["id"], "once", "100", "10")
    after = Position.objects.get(account=account).__dict__
    assert {k: after[k] for k in ("quantity", "avg_cost", "version")} == {
        k: before[k] for k in ("quantity", "avg_cost", "version")
    }
    assert OutboxEvent.objects.count() == events


def test_fill_after_cancel_still_moves_the_position(manager, account):
    order = place(manager, account, quantity="100")
    fill_order(order["id"], "p1", "30", "187.50")
    manager.api.post(f"/orders/{order['id']}/cancel")
    order_row = Order.objects.get(id=order["id"])
    broker_event_apply(event=BrokerEvent(kind="cancelled", account_id=account.id, order_id=order_row.id))
    fill_order(order["id"], "p2", "20", "187.50")
    assert Order.objects.get(id=order["id"]).state == "CANCELED"
    assert Position.objects.get(account=account).quantity == D(50)


def test_positions_endpoints_mark_with_the_cached_price(manager, account, instruments, redis_client):
    trade(manager, account, "BUY", "100", "10", "m1")
    listed = manager.api.get("/positions").json_body
    assert [(p["symbol"], p["quantity"], p["market_price"], p["unrealized_pnl"]) for p in listed["items"]] == [
        ("AAPL", "100", None, None)
    ]
    set_price(redis_client, instruments["AAPL"], "11.5")
    body = manager.api.get("/positions/aapl").json_body
    assert body["account_id"] == str(account.id)
    assert (body["avg_cost"], body["market_price"], body["market_value"], body["unrealized_pnl"]) == (
        "10.01",
        "11.5",
        "1150",
        "149",
    )
    assert body["realized_pnl"] == "0"


def test_flat_positions_are_hidden_unless_asked(manager, account):
    trade(manager, account, "BUY", "10", "10", "f1")
    trade(manager, account, "SELL", "10", "11", "f2")
    assert manager.api.get("/positions").json_body["items"] == []
    flat = manager.api.get("/positions?include_flat=true").json_body["items"]
    assert [(p["quantity"], p["realized_pnl"]) for p in flat] == [("0", "8")]


def test_symbol_held_on_two_accounts_needs_the_account(tenant, manager, account):
    second = make_account(tenant, "PAPER2")
    trade(manager, account, "BUY", "10", "10", "a1")
    trade(manager, second, "BUY", "5", "10", "a2")
    ambiguous = manager.api.get("/positions/AAPL")
    assert (ambiguous.status_code, ambiguous.json_body["code"]) == (422, "VALIDATION_ERROR")
    assert "account_id" in ambiguous.json_body["details"]
    chosen = manager.api.get(f"/positions/AAPL?account_id={second.id}").json_body
    assert chosen["quantity"] == "5"
    assert manager.api.get("/positions/SPY").status_code == 404
    assert manager.api.get("/positions?colour=red").status_code == 422
    assert manager.api.get("/positions/AAPL?account_id=nope").status_code == 422


def test_trader_sees_only_granted_accounts_positions(tenant, manager, granted_trader, account):
    hidden = make_account(tenant, "HIDDEN")
    trade(manager, hidden, "BUY", "7", "10", "h1", symbol="SPY")
    trade(manager, account, "BUY", "3", "10", "v1")
    assert [p["symbol"] for p in granted_trader.api.get("/positions").json_body["items"]] == ["AAPL"]
    assert granted_trader.api.get("/positions/SPY").status_code == 404
    assert granted_trader.api.get(f"/positions/AAPL?account_id={hidden.id}").status_code == 404


def test_another_tenants_positions_are_invisible(manager, account, other_tenant):
    trade(manager, account, "BUY", "10", "10", "t1")
    stranger = make_member(other_tenant, Role.ADMIN)
    assert stranger.api.get("/positions").json_body["items"] == []
    assert stranger.api.get("/positions/AAPL").status_code == 404
    assert stranger.api.get(f"/positions/AAPL?account_id={account.id}").status_code == 404
