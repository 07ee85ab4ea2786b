"""The paper broker loop and the applier in-process: commands in, broker events out, orders and positions moved."""

from __future__ import annotations

from decimal import Decimal

import orjson

from apps.brokers.paper.process import PaperBroker
from apps.events.commands import command_stream, envelope_sign
from apps.events.prices import last_prices
from apps.events.streams import BROKER_EVENTS, StreamConsumer
from apps.orders.management.commands.run_applier import GROUP, apply_entries
from apps.orders.models import Execution, Order
from apps.portfolio.models import Position
from tests.orders.conftest import order_body


def applier(redis_client):
    consumer = StreamConsumer(client=redis_client, stream=BROKER_EVENTS, group=GROUP, consumer="test")
    consumer.ensure_group()
    return consumer


def pump(broker, consumer, turns=2):
    for _ in range(turns):
        broker.run_once(block_ms=10)
        apply_entries(consumer, consumer.read(block_ms=None))


def place(member, account, capture, **overrides):
    with capture(execute=True):
        response = member.api.post("/orders", order_body(account, **overrides))
    assert response.status_code == 201, response.json_body
    return response.json_body["id"]


def test_market_order_fills_and_moves_the_position(
    manager, account, instruments, redis_client, django_capture_on_commit_callbacks
):
    broker, consumer = PaperBroker(client=redis_client), applier(redis_client)
    broker.refresh_accounts()
    order_id = place(manager, account, django_capture_on_commit_callbacks, order_type="MKT", limit_price=None)
    pump(broker, consumer)
    order = Order.objects.get(id=order_id)
    assert (order.state, order.filled_quantity, order.broker_order_id) == ("FILLED", Decimal(100), f"PAPER-{order_id}")
    (execution,) = Execution.objects.filter(order_id=order.id)
    assert (execution.broker_exec_id, execution.commission) == (f"{order_id}.1", Decimal("0.35"))
    position = Position.objects.get(account=account)
    assert position.quantity == Decimal(100)
    assert (
        last_prices(client=redis_client, instrument_ids=[instruments["AAPL"].id])[str(instruments["AAPL"].id)].source
        == "paper"
    )


def test_resting_limit_is_cancelled_and_a_replayed_event_changes_nothing(
    manager, account, instruments, redis_client, django_capture_on_commit_callbacks
):
    broker, consumer = PaperBroker(client=redis_client), applier(redis_client)
    broker.refresh_accounts()
    order_id = place(manager, account, django_capture_on_commit_callbacks, limit_price="100.00")
    pump(broker, consumer)
    assert Order.objects.get(id=order_id).state == "ROUTED"
    with django_capture_on_commit_callbacks(execute=True):
        assert manager.api.post(f"/orders/{order_id}/cancel").json_body["state"] == "PENDING_CANCEL"
    pump(broker, consumer)
    order = Order.objects.get(id=order_id)
    assert order.state == "CANCELED"
    # Every broker event again: nothing moves.
    for _, fields in redis_client.xrange(BROKER_EVENTS):
        redis_client.xadd(BROKER_EVENTS, fields)
    apply_entries(consumer, consumer.read(block_ms=None, count=1000))
    assert Order.objects.get(id=order_id).version == order.version


def test_forged_command_is_refused_and_recorded(manager, account, redis_client):
    broker = PaperBroker(client=redis_client)
    broker.refresh_accounts()
    envelope = {
        **envelope_sign(kind="oms.submit", payload={"account_id": str(account.id), "orders": []}),
        "sig": "0" * 64,
    }
    redis_client.xadd(command_stream(account.id), {"envelope": orjson.dumps(envelope)})
    broker.run_once(block_ms=10)
    (entry,) = [fields for _, fields in redis_client.xrange(BROKER_EVENTS)]
    assert (entry[b"kind"], entry[b"tenant_id"].decode()) == (b"command.rejected", str(account.tenant_id))
    assert orjson.loads(entry[b"data"])["reason"] == "bad signature"
    assert (
        manager.api.get("/events/tail?kind=command.rejected").json_body["items"][0]["data"]["reason"] == "bad signature"
    )


def test_duplicate_submission_is_filled_once(
    manager, account, instruments, redis_client, django_capture_on_commit_callbacks
):
    broker, consumer = PaperBroker(client=redis_client), applier(redis_client)
    broker.refresh_accounts()
    order_id = place(manager, account, django_capture_on_commit_callbacks, order_type="MKT", limit_price=None)
    ((_, fields),) = redis_client.xrange(command_stream(account.id))
    envelope = orjson.loads(fields[b"envelope"])
    resent = envelope_sign(kind="oms.submit", payload=envelope["payload"])  # the reroute task's resend
    redis_client.xadd(command_stream(account.id), {"envelope": orjson.dumps(resent)})
    pump(broker, consumer, turns=3)
    assert Execution.objects.filter(order_id=order_id).count() == 1
    assert Position.objects.get(account=account).quantity == Decimal(100)
