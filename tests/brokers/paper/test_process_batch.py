"""The paper broker handles what one read returns together: one MULTI/EXEC publishes the events
and acknowledges the commands, and a submission sent twice within the read fills once."""

from __future__ import annotations

from decimal import Decimal

import orjson

from apps.brokers.paper.process import GROUP, PaperBroker
from apps.events.commands import command_stream, envelope_sign
from apps.events.streams import BROKER_EVENTS
from apps.orders.models import Order
from tests.brokers.paper.test_process import applier, place, pump


def test_a_read_of_several_commands_is_published_and_acknowledged_at_once(
    manager, account, instruments, redis_client, django_capture_on_commit_callbacks
):
    broker, consumer = PaperBroker(client=redis_client), applier(redis_client)
    broker.refresh_accounts()
    ids = [
        place(manager, account, django_capture_on_commit_callbacks, order_type="MKT", limit_price=None)
        for _ in range(3)
    ]
    stream = command_stream(account.id)
    _, fields = redis_client.xrange(stream)[0]
    resent = envelope_sign(kind="oms.submit", payload=orjson.loads(fields[b"envelope"])["payload"])
    redis_client.xadd(stream, {"envelope": orjson.dumps(resent)})  # the first order again, same read
    assert broker.run_once(block_ms=10) == 4
    assert redis_client.xpending(stream, GROUP)["pending"] == 0  # acknowledged with the events
    kinds = [fields[b"kind"] for _, fields in redis_client.xrange(BROKER_EVENTS)]
    assert kinds.count(b"accepted") == 3 and kinds.count(b"execution") == 3
    pump(broker, consumer)
    orders = Order.objects.filter(id__in=ids)
    assert sorted((order.state, order.filled_quantity) for order in orders) == [("FILLED", Decimal(100))] * 3
