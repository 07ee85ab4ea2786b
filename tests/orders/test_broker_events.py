"""Applying broker events: acknowledgements, partial fills, replays, fill after cancel, rejects."""

from __future__ import annotations

from decimal import Decimal

from django.utils import timezone

from apps.audit.models import AuditLog
from apps.orders.models import Execution, Order, OrderEvent
from apps.orders.services.broker_events import BrokerEvent, Fill, broker_event_apply
from tests.orders.test_manage import place


def event(order, kind, **kw):
    return BrokerEvent(kind=kind, account_id=order.account_id, order_id=order.id, **kw)


def fill(exec_id, quantity, price):
    return Fill(exec_id, Decimal(quantity), Decimal(price), Decimal("0.35"), "USD", timezone.now())


def test_ack_then_three_partial_fills_give_vwap(manager, account):
    order = Order.objects.get(id=place(manager, account, quantity="300")["id"])
    order = broker_event_apply(event=event(order, "accepted", broker_order_id="PERM-1"))
    assert (order.state, order.broker_order_id, order.routed_at is not None) == ("ROUTED", "PERM-1", True)
    for index, price in enumerate(("187.00", "187.10", "187.20")):
        order = broker_event_apply(event=event(order, "execution", fill=fill(f"e{index}", "100", price)))
    assert (order.state, order.filled_quantity) == ("FILLED", Decimal(300))
    body = manager.api.get(f"/orders/{order.id}").json_body
    assert (body["avg_fill_price"], body["remaining_quantity"], body["state"]) == ("187.1", "0", "FILLED")
    assert Execution.objects.filter(order_id=order.id).count() == 3


def test_replayed_execution_changes_nothing(manager, account):
    order = Order.objects.get(id=place(manager, account)["id"])
    broker_event_apply(event=event(order, "accepted"))
    once = broker_event_apply(event=event(order, "execution", fill=fill("dup", "40", "187")))
    snapshot = (once.version, once.filled_quantity, once.state)
    events, audits = OrderEvent.objects.count(), AuditLog.objects.count()
    again = broker_event_apply(event=event(order, "execution", fill=fill("dup", "40", "187")))
    assert (again.version, again.filled_quantity, again.state) == snapshot == (3, Decimal(40), "PARTIALLY_FILLED")
    assert Execution.objects.count() == 1
    assert (OrderEvent.objects.count(), AuditLog.objects.count()) == (events, audits)
    acked = broker_event_apply(event=event(order, "accepted"))
    assert acked.version == 3  # a replayed acknowledgement is a no-op too


def test_fill_while_cancel_pending_then_after_cancel_is_recorded(manager, account):
    order = Order.objects.get(id=place(manager, account, quantity="100")["id"])
    broker_event_apply(event=event(order, "accepted"))
    manager.api.post(f"/orders/{order.id}/cancel")
    order = broker_event_apply(event=event(order, "execution", fill=fill("a", "30", "187")))
    assert (order.state, order.filled_quantity) == ("PENDING_CANCEL", Decimal(30))
    order = broker_event_apply(event=event(order, "cancelled", reason="cancelled by request"))
    assert order.state == "CANCELED"
    order = broker_event_apply(event=event(order, "execution", fill=fill("b", "20", "188")))
    assert (order.state, order.filled_quantity) == ("CANCELED", Decimal(50))
    assert manager.api.get(f"/orders/{order.id}").json_body["avg_fill_price"] == "187.4"


def test_reject_and_cancel_reject(manager, account):
    rejected = Order.objects.get(id=place(manager, account)["id"])
    rejected = broker_event_apply(event=event(rejected, "rejected", reason="201: insufficient margin"))
    assert (rejected.state, rejected.reject_reason) == ("REJECTED", "201: insufficient margin")
    working = Order.objects.get(id=place(manager, account)["id"])
    broker_event_apply(event=event(working, "accepted"))
    manager.api.post(f"/orders/{working.id}/cancel")
    working = broker_event_apply(event=event(working, "rejected", request="cancel", reason="161: not cancellable"))
    assert working.state == "ROUTED"


def test_event_for_another_account_is_ignored(manager, account, tenant):
    from tests.orders.conftest import make_account

    order = Order.objects.get(id=place(manager, account)["id"])
    other = make_account(tenant, "OTHER")
    assert broker_event_apply(event=BrokerEvent(kind="accepted", account_id=other.id, order_id=order.id)) is None
    order.refresh_from_db()
    assert (order.state, order.version) == ("NEW", 1)


def test_rejected_modification_is_reverted(manager, account):
    order = Order.objects.get(id=place(manager, account, quantity="100", limit_price="187.50")["id"])
    broker_event_apply(event=event(order, "accepted"))
    version = manager.api.get(f"/orders/{order.id}")["ETag"]
    patched = manager.api.patch(
        f"/orders/{order.id}", {"quantity": "150", "limit_price": "188"}, headers={"If-Match": version}
    )
    assert (patched.json_body["state"], patched.json_body["limit_price"]) == ("PENDING_MODIFY", "188")
    order = broker_event_apply(event=event(order, "rejected", request="modify", reason="104: cannot modify"))
    order.refresh_from_db()
    assert (order.state, order.quantity, order.limit_price) == ("ROUTED", Decimal(100), Decimal("187.5"))
    last = OrderEvent.objects.filter(order=order).order_by("-seq").first()
    assert last.detail["reverted"] == {"quantity": "100", "limit_price": "187.5"}
