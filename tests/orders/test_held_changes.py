"""Modifying or cancelling an order we hold (NEW, its submission not sent: outside the session, or
while the broker is down on an account that holds orders): done here only, no broker command,
and the submission sent later carries the new values."""

from __future__ import annotations

from datetime import timedelta

import orjson
from django.utils import timezone

from apps.audit.models import AuditLog
from apps.brokers.models import BrokerAccount
from apps.compliance import calendars
from apps.orders.models import Order, OrderEvent
from apps.orders.services.sessions import held_release
from apps.orders.state import OrderState
from tests.orders.conftest import order_body
from tests.orders.test_session import closed_calendar, follow


def sent(redis_client, account) -> list[tuple[str, list[dict]]]:
    """(kind, order items) of every command sent to the account's connector."""
    out = []
    for _, fields in redis_client.xrange(f"cmd.{account.id}"):
        envelope = orjson.loads(fields[b"envelope"])
        out.append((envelope["kind"], envelope["payload"]["orders"]))
    return out


def place(member, account, capture, **overrides):
    with capture(execute=True):
        response = member.api.post("/orders", order_body(account, **overrides))
    assert response.status_code == 201, response.json_body
    return response.json_body


def modify(member, order, capture, body, version=1):
    with capture(execute=True):
        response = member.api.patch(f"/orders/{order['id']}", body, headers={"If-Match": f'"{version}"'})
    assert response.status_code == 200, response.json_body
    return response.json_body


def cancel(member, order, capture):
    with capture(execute=True):
        response = member.api.post(f"/orders/{order['id']}/cancel")
    assert response.status_code in (200, 202), response.json_body
    return response.json_body


def test_a_held_order_is_modified_here_and_routed_with_the_new_values_at_the_open(
    manager, granted_trader, account, redis_client, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    name = closed_calendar()
    follow(manager, account, name, capture)
    held = place(granted_trader, account, capture)
    changed = modify(granted_trader, held, capture, {"quantity": "150", "limit_price": "186"})
    assert changed["state"] == "NEW"
    assert changed["quantity"] == "150" and changed["limit_price"] == "186"
    assert sent(redis_client, account) == []  # no oms.modify for an order the broker never saw
    event = OrderEvent.objects.get(order_id=held["id"], kind="MODIFIED")
    assert event.detail["held"] is True and event.detail["after"] == {"quantity": "150", "limit_price": "186"}
    assert AuditLog.objects.filter(action="order.modify", resource_id=held["id"]).count() == 1

    opens = calendars.facts(name, timezone.now()).next_open
    assert held_release(now=opens + timedelta(minutes=1)) == 1
    [(kind, items)] = sent(redis_client, account)
    assert kind == "oms.submit"
    assert items[0]["order_id"] == held["id"]
    assert items[0]["quantity"] == "150" and items[0]["limit_price"] == "186"


def test_a_held_order_is_cancelled_here_and_never_routed(
    manager, granted_trader, account, redis_client, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    name = closed_calendar()
    follow(manager, account, name, capture)
    held = place(granted_trader, account, capture)
    cancelled = cancel(granted_trader, held, capture)
    assert cancelled["state"] == "CANCELED"
    assert sent(redis_client, account) == []  # no oms.cancel
    assert AuditLog.objects.filter(action="order.cancel", resource_id=held["id"]).count() == 1
    opens = calendars.facts(name, timezone.now()).next_open
    assert held_release(now=opens + timedelta(minutes=1)) == 0
    assert sent(redis_client, account) == []


def test_a_held_bracket_cancels_with_its_legs_locally(
    manager, granted_trader, account, redis_client, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    follow(manager, account, closed_calendar(), capture)
    body = {"order_class": "BRACKET", "take_profit": {"limit_price": "190"}, "stop_loss": {"stop_price": "180"}}
    parent = place(granted_trader, account, capture, **body)
    cancel(granted_trader, parent, capture)
    assert set(Order.objects.values_list("state", flat=True)) == {OrderState.CANCELED}
    assert sent(redis_client, account) == []


def test_an_order_outside_the_session_with_outside_rth_still_gets_the_modify_command(
    manager, granted_trader, account, redis_client, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    follow(manager, account, closed_calendar(), capture)
    order = place(granted_trader, account, capture, outside_rth=True)  # routed at once: not held
    modify(granted_trader, order, capture, {"limit_price": "186"})
    assert [kind for kind, _ in sent(redis_client, account)] == ["oms.submit", "oms.modify"]


def test_while_the_broker_is_down_an_order_whose_submission_went_stale_is_modified_here(
    granted_trader, account, redis_client, django_capture_on_commit_callbacks, settings
):
    capture = django_capture_on_commit_callbacks
    BrokerAccount.objects.filter(id=account.id).update(status="DISCONNECTED", orders_when_disconnected="HOLD")
    young = place(granted_trader, account, capture)
    old = place(granted_trader, account, capture)
    stale = timezone.now() - timedelta(seconds=settings.COMMAND_MAX_AGE_SECONDS + 5)
    Order.objects.filter(id=old["id"]).update(created_at=stale)
    before = len(sent(redis_client, account))
    modify(granted_trader, old, capture, {"limit_price": "186"})
    assert len(sent(redis_client, account)) == before  # its submission will be resent with 186
    # A young one's submission may still reach the broker: the modification follows it.
    modify(granted_trader, young, capture, {"limit_price": "186"})
    assert sent(redis_client, account)[-1][0] == "oms.modify"
    cancel(granted_trader, old, capture)
    assert sent(redis_client, account)[-1][0] == "oms.modify"  # no oms.cancel for the held one
    assert Order.objects.get(id=old["id"]).state == OrderState.CANCELED
