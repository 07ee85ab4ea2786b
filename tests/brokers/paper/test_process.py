"""The paper broker loop and the applier in-process: commands in, broker events out, orders and positions moved."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson

from apps.brokers.paper.process import WORKING, PaperBroker
from apps.events.commands import command_stream, envelope_sign
from apps.events.prices import LastPrice, last_price_set, last_prices
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


def feed_quote(redis_client, instrument, price: str) -> None:
    """A real feed's quote in the last-price cache: the paper broker trades against it."""
    value = Decimal(price)
    quote = LastPrice(value, value, value, Decimal(1000), Decimal(1000), datetime.now(UTC), "ib")
    last_price_set(client=redis_client, instrument_id=instrument.id, price=quote)


def test_working_orders_survive_a_restart_and_fill_once(
    manager, account, instruments, redis_client, django_capture_on_commit_callbacks
):
    consumer = applier(redis_client)
    feed_quote(redis_client, instruments["AAPL"], "190.00")
    first = PaperBroker(client=redis_client)
    order_id = place(manager, account, django_capture_on_commit_callbacks, limit_price="187.50", quantity="1500")
    pump(first, consumer)
    # Part of it trades (the quote shows 1,000 shares), the rest rests.
    feed_quote(redis_client, instruments["AAPL"], "187.00")
    first.publish(first.step_prices(datetime.now(UTC)))
    apply_entries(consumer, consumer.read(block_ms=None))
    assert Order.objects.get(id=order_id).filled_quantity == Decimal(1000)
    feed_quote(redis_client, instruments["AAPL"], "190.00")
    del first  # the process dies: its memory is gone

    second = PaperBroker(client=redis_client)
    pump(second, consumer)  # takes the order back; 190 does not cross
    assert Order.objects.get(id=order_id).state == "PARTIALLY_FILLED"
    feed_quote(redis_client, instruments["AAPL"], "187.00")
    second.publish(second.step_prices(datetime.now(UTC)))
    apply_entries(consumer, consumer.read(block_ms=None))
    pump(second, consumer)
    order = Order.objects.get(id=order_id)
    assert (order.state, order.filled_quantity) == ("FILLED", Decimal(1500))
    executions = Execution.objects.filter(order_id=order_id).order_by("executed_at")
    assert [(e.broker_exec_id, e.quantity, e.price) for e in executions] == [
        (f"{order_id}.1", Decimal(1000), Decimal("187.50")),
        (f"{order_id}.2", Decimal(500), Decimal("187.50")),
    ]
    assert sum(e.commission for e in executions) == Decimal("5.25")  # 1,500 x 0.0035: one order's schedule
    assert redis_client.hlen(WORKING) == 0
    # A third process has nothing to take back.
    third = PaperBroker(client=redis_client)
    assert third.restore() == [] and not third.venue.orders
