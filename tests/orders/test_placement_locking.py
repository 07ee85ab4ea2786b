"""Placement concurrency: the account lock is held only for the risk decision and the commit, the
rows are written before it, and batches over several accounts lock them in one order."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.audit.models import UNSEALED, AuditLog
from apps.brokers.services import broker_account_grant
from apps.events.models import OutboxEvent
from apps.orders.models import Order, OrderEvent
from tests.orders.conftest import SYSTEM, make_account, order_body


@pytest.fixture
def second_account(tenant, instruments, granted_trader):
    account = make_account(tenant, "PAPER2")
    broker_account_grant(tenant=tenant, actor=SYSTEM, account_id=account.id, user_id=granted_trader.user.id)
    return account


def test_the_account_lock_is_taken_after_every_row_is_written(granted_trader, account):
    """Order, event, outbox row and audit row are written before the lock; one INSERT per table."""
    body = order_body(
        account, order_class="BRACKET", take_profit={"limit_price": "190"}, stop_loss={"stop_price": "180"}
    )
    with CaptureQueriesContext(connection) as queries:
        response = granted_trader.api.post("/orders", body)
    assert response.status_code == 201, response.json_body
    statements = [query["sql"] for query in queries.captured_queries]
    lock = next(i for i, sql in enumerate(statements) if "pg_advisory_xact_lock" in sql)
    # The rows go in one statement (a WITH of one INSERT per table), the idempotency record's too.
    inserts = [i for i, sql in enumerate(statements) if "INSERT INTO" in sql]
    assert inserts and max(inserts) < lock
    after_lock = statements[lock + 1 :]
    assert not any(
        word in sql for sql in after_lock if "risk_accountrisk" not in sql for word in ("INSERT", "UPDATE", "DELETE")
    )
    for table in ("orders_order", "orders_orderevent", "events_outboxevent", "audit_auditlog"):
        assert sum(sql.count(f'INSERT INTO "{table}"') for sql in statements) == 1, table
    parent = Order.objects.get(id=response.json_body["id"])
    orders = [parent, *parent.legs.all()]
    assert len(orders) == 3
    assert OrderEvent.objects.filter(order__in=orders, kind="CREATED").count() == 3
    assert OutboxEvent.objects.filter(kind="order.created", aggregate_id__in=[str(o.id) for o in orders]).count() == 3
    entries = AuditLog.objects.filter(action="order.place", resource_id__in=[str(o.id) for o in orders])
    assert entries.count() == 3
    assert set(entries.values_list("position", flat=True)) == {UNSEALED}  # the relay seals after commit


def test_the_book_leaves_out_the_order_being_placed(granted_trader, account, manager):
    """The order is written before the gates read the book: it must not count twice (as the
    candidate and as a working order), nor as a submission of the rate limit."""
    created = manager.api.post(
        "/risk/limits", {"kind": "MAX_OPEN_ORDERS", "scope": "ACCOUNT", "scope_id": str(account.id), "value": "1"}
    )
    assert created.status_code == 201, created.json_body
    first = granted_trader.api.post("/orders", order_body(account))
    assert first.status_code == 201, first.json_body
    second = granted_trader.api.post("/orders", order_body(account))
    assert second.status_code == 422, second.json_body
    assert Order.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_batches_over_the_same_accounts_in_opposite_order_both_go_through(
    live_server, granted_trader, account, second_account
):
    """Without one lock order, each batch holds one account and waits for the other's: PostgreSQL
    then refuses one of them (deadlock detected). Sorted locking lets both finish, every item placed."""
    url = f"{live_server.url}/api/v1/orders/batch"
    headers = {"Authorization": f"Bearer {granted_trader.access}"}
    one, two = (order_body(acc, quantity="1") for acc in (account, second_account))
    bodies = [{"orders": [one, two] * 5}, {"orders": [two, one] * 5}]
    for _ in range(3):
        start = threading.Barrier(2)

        def post(body: dict, start: threading.Barrier = start) -> httpx.Response:
            with httpx.Client(timeout=60) as client:
                start.wait()
                return client.post(url, json=body, headers=headers)

        with ThreadPoolExecutor(max_workers=2) as pool:
            responses = list(pool.map(post, bodies))
        assert [r.status_code for r in responses] == [200, 200], [r.text[:300] for r in responses]
        statuses = [item["status"] for r in responses for item in r.json()["results"]]
        assert statuses == [201] * 20, [item["error"] for r in responses for item in r.json()["results"]][:3]
    assert Order.objects.count() == 60


def test_an_applier_batch_writes_one_insert_per_table_in_order(manager, account):
    """A batch of broker events: its order events and outbox rows go in with one INSERT each, the
    outbox rows in the order the events happened; a replayed execution in the batch writes nothing."""
    from decimal import Decimal

    from django.utils import timezone

    from apps.orders.models import Execution
    from apps.orders.services.broker_events import BrokerEvent, Fill, broker_events_apply

    placed = [manager.api.post("/orders", order_body(account, quantity="10")).json_body["id"] for _ in range(3)]
    orders = list(Order.objects.filter(id__in=placed).order_by("created_at"))
    events = []
    for order in orders:
        fill = Fill(f"x-{order.id}", Decimal(10), Decimal("187.50"), Decimal("0.35"), "USD", timezone.now())
        events += [
            BrokerEvent(kind="accepted", account_id=account.id, order_id=order.id, broker_order_id=f"P-{order.id}"),
            BrokerEvent(kind="execution", account_id=account.id, order_id=order.id, fill=fill),
            BrokerEvent(kind="execution", account_id=account.id, order_id=order.id, fill=fill),  # replayed
        ]
    before = OutboxEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
    with CaptureQueriesContext(connection) as queries:
        assert broker_events_apply(events=events) == 6
    statements = [query["sql"] for query in queries.captured_queries]
    for table in ("orders_orderevent", "events_outboxevent"):
        assert sum(sql.startswith(f'INSERT INTO "{table}"') for sql in statements) == 1, table
    # No savepoint per execution (the exec id is claimed by its INSERT); one creates the position.
    assert sum(sql.startswith("SAVEPOINT") for sql in statements) == 1
    assert Execution.objects.count() == 3
    published = list(OutboxEvent.objects.filter(seq__gt=before).order_by("seq").values_list("kind", "aggregate_id"))
    expected = []
    for order in orders:
        expected += [("order.routed", str(order.id)), ("position.updated", None), ("order.filled", str(order.id))]
    assert [(kind, aggregate if kind.startswith("order.") else None) for kind, aggregate in published] == expected
    for order in orders:
        kinds = list(OrderEvent.objects.filter(order=order).order_by("seq").values_list("seq", "to_state"))
        assert kinds == [(1, "NEW"), (2, "ROUTED"), (3, "FILLED")]


def test_under_the_lock_the_snapshot_is_one_statement(granted_trader, account, manager):
    """Book, positions, trading state, kill switches and breakers are read in one statement after
    the lock (and the halts in it still stop the order: see tests/risk)."""
    with CaptureQueriesContext(connection) as queries:
        response = granted_trader.api.post("/orders", order_body(account))
    assert response.status_code == 201, response.json_body
    statements = [query["sql"] for query in queries.captured_queries]
    lock = next(i for i, sql in enumerate(statements) if "pg_advisory_xact_lock" in sql)
    # The snapshot is the statement sent after the lock's in the same round trip (its own
    # snapshot under READ COMMITTED); besides it: the peak-equity UPDATE when equity rises, and
    # the commit (a savepoint in tests).
    locking, snapshot = statements[lock].split(";", 1)
    assert locking.startswith("SELECT pg_advisory_xact_lock(")
    after_lock = [
        sql
        for sql in statements[lock + 1 :]
        if "SAVEPOINT" not in sql and not sql.startswith('UPDATE "risk_accountrisk"')
    ]
    assert after_lock == []
    for table in ("orders_order", "portfolio_position", "risk_accountrisk", "risk_killswitch", "risk_circuitbreaker"):
        assert table in snapshot, table


def test_a_kill_switch_read_in_the_locked_snapshot_stops_the_order(granted_trader, account, manager):
    """The kill switches are read after the lock, in the snapshot statement, and still refuse."""
    body = order_body(account)
    engaged = manager.api.post("/risk/kill-switch", {"scope": "ACCOUNT", "scope_id": str(account.id), "reason": "t"})
    assert engaged.status_code in (200, 201), engaged.json_body
    refused = granted_trader.api.post("/orders", body)
    assert refused.status_code == 423, refused.json_body
    assert refused.json_body["details"]["halted_by"] == engaged.json_body["id"]
