"""The applier's batch (`broker_events_apply`): one statement per table, not per event, with the
same outcome as applying the events one by one, and replays (within a batch and across batches)
changing nothing."""

from __future__ import annotations

from decimal import Decimal

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.audit.models import AuditLog
from apps.orders.models import Execution, ExecutionKey, Order, OrderEvent
from apps.orders.services.broker_events import BrokerEvent, Fill, broker_event_apply, broker_events_apply
from apps.portfolio.models import Position
from tests.orders.test_manage import place


def event(order, kind, **kw):
    return BrokerEvent(kind=kind, account_id=order.account_id, order_id=order.id, **kw)


def fill(exec_id, quantity, price, commission="0.35"):
    return Fill(exec_id, Decimal(quantity), Decimal(price), Decimal(commission), "USD", timezone.now())


def market_orders(manager, account, count, quantity="10"):
    return [Order.objects.get(id=place(manager, account, quantity=quantity)["id"]) for _ in range(count)]


def acked_and_filled(orders, prefix="x"):
    events = []
    for index, order in enumerate(orders):
        events.append(event(order, "accepted", broker_order_id=f"PERM-{prefix}{index}"))
        events.append(event(order, "execution", fill=fill(f"{prefix}{index}", "10", f"{187 + index}")))
    return events


def outcome(orders):
    rows = Order.objects.filter(id__in=[order.id for order in orders]).order_by("created_at")
    return [(o.state, o.version, o.filled_quantity, o.filled_notional, o.broker_order_id) for o in rows]


def test_a_batch_costs_a_few_statements_whatever_its_size(manager, account):
    warm, small, large = (market_orders(manager, account, count) for count in (1, 2, 12))
    broker_events_apply(events=acked_and_filled(warm, "w"))  # the position's first execution creates it
    with CaptureQueriesContext(connection) as few:
        assert broker_events_apply(events=acked_and_filled(small, "s")) == 4
    with CaptureQueriesContext(connection) as many:
        assert broker_events_apply(events=acked_and_filled(large, "l")) == 24
    # One UPDATE per order (its acknowledgement and its fill together); everything else per batch.
    assert len(many.captured_queries) - len(few.captured_queries) == len(large) - len(small)
    assert len(few.captured_queries) <= 14, [q["sql"][:80] for q in few.captured_queries]
    assert all(state == "FILLED" for state, *_ in outcome(large))
    assert Execution.objects.count() == ExecutionKey.objects.count() == 15


def test_a_batch_ends_where_the_events_one_by_one_end(manager, account, tenant):
    batched, single = market_orders(manager, account, 3), market_orders(manager, account, 3)
    broker_events_apply(events=acked_and_filled(batched, "b"))
    for item in acked_and_filled(single, "o"):
        broker_event_apply(event=item)
    assert [row[:4] for row in outcome(batched)] == [row[:4] for row in outcome(single)]
    position = Position.objects.get(account=account, symbol="AAPL")
    assert (position.quantity, position.executions, position.version) == (Decimal(60), 6, 6)
    assert position.commissions == Decimal("2.10")
    assert position.avg_cost == (Decimal((187 + 188 + 189) * 2 * 10) + Decimal("2.10")) / 60  # commissions in
    for order in batched:  # the events, outbox rows and audit rows of every step, in order
        kinds = list(OrderEvent.objects.filter(order_id=order.id).order_by("seq").values_list("to_state", flat=True))
        assert kinds == ["NEW", "ROUTED", "FILLED"]
    moves = AuditLog.objects.filter(action="position.execution_applied").order_by("seq")
    assert [entry.after["quantity"] for entry in moves] == ["10", "20", "30", "40", "50", "60"]
    assert AuditLog.objects.filter(action="order.broker_execution").count() == 6


def test_replays_in_and_across_batches_change_nothing(manager, account):
    orders = market_orders(manager, account, 2)
    first = acked_and_filled(orders, "r")
    # The same execution twice in one batch: applied once.
    assert broker_events_apply(events=[*first, first[1]]) == 4
    before = (outcome(orders), Execution.objects.count(), OrderEvent.objects.count(), AuditLog.objects.count())
    position = Position.objects.get(account=account, symbol="AAPL")
    # The whole batch again (a redelivery after a crash before the ack): nothing moves.
    assert broker_events_apply(events=first) == 0
    after = (outcome(orders), Execution.objects.count(), OrderEvent.objects.count(), AuditLog.objects.count())
    assert after == before
    position.refresh_from_db()
    assert (position.quantity, position.executions) == (Decimal(20), 2)


def test_a_late_commission_in_the_batch_of_its_execution(manager, account):
    (order,) = market_orders(manager, account, 1)
    events = [
        event(order, "accepted", broker_order_id="PERM-c"),
        event(order, "execution", fill=fill("c1", "10", "187", commission="0")),
        event(order, "commission", fill=fill("c1", "10", "187", commission="1.25")),
    ]
    assert broker_events_apply(events=events) == 3
    assert Execution.objects.get(broker_exec_id="c1").commission == Decimal("1.25")
    position = Position.objects.get(account=account, symbol="AAPL")
    assert (position.quantity, position.commissions) == (Decimal(10), Decimal("1.25"))
