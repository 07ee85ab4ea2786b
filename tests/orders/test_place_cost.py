"""The cost of POST /orders: how many statements it sends, and what the fewer statements must keep
(issue #5): the account grant, the listing rules, the halts read after the lock was granted."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from guardian.shortcuts import assign_perm

from apps.brokers.permissions import TRADE_PERMISSION
from apps.brokers.services import broker_account_grant
from apps.orders.models import Order
from apps.risk.models import AccountRisk
from apps.risk.services.pretrade import account_lock
from tests.orders.conftest import SYSTEM, make_account, order_body


def _statements(queries: CaptureQueriesContext) -> list[str]:
    return [query["sql"] for query in queries.captured_queries if "SAVEPOINT" not in query["sql"]]


def test_a_placement_is_four_statements(granted_trader, account):
    """Account with grant and listings, the rows, the risk configuration, lock with snapshot."""
    granted_trader.api.post("/orders", order_body(account))  # warm per-process caches
    with CaptureQueriesContext(connection) as queries:
        response = granted_trader.api.post("/orders", order_body(account))
    assert response.status_code == 201, response.json_body
    statements = _statements(queries)
    assert len(statements) == 4, statements
    assert "brokers_instrument" in statements[0] and "guardian_userobjectpermission" in statements[0]
    assert statements[1].startswith("WITH ")
    assert "risk_risklimit" in statements[2] and "compliance_compliancerule" in statements[2]
    assert statements[3].startswith("SELECT pg_advisory_xact_lock(")


def test_an_idempotency_key_adds_its_claim_only(granted_trader, account):
    """The response is stored with the rows (same statement), not by an UPDATE of its own."""
    granted_trader.api.post("/orders", order_body(account))  # warm per-process caches
    with CaptureQueriesContext(connection) as queries:
        response = granted_trader.api.post("/orders", order_body(account), headers={"Idempotency-Key": "cost-1"})
    assert response.status_code == 201, response.json_body
    statements = _statements(queries)
    assert len(statements) == 5, statements
    assert "orders_idempotencyrecord" in statements[2] and statements[2].startswith("WITH ")
    again = granted_trader.api.post("/orders", order_body(account), headers={"Idempotency-Key": "cost-1"})
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert again.json_body == response.json_body
    assert Order.objects.count() == 2


def test_an_account_not_granted_to_the_trader_is_not_found_until_granted(granted_trader, trader, tenant, instruments):
    other = make_account(tenant, "PAPER2")
    refused = granted_trader.api.post("/orders", order_body(other))
    assert refused.status_code == 404, refused.json_body
    assert refused.json_body["code"] == "NOT_FOUND"
    broker_account_grant(tenant=tenant, actor=SYSTEM, account_id=other.id, user_id=trader.user.id)
    assert granted_trader.api.post("/orders", order_body(other)).status_code == 201


def test_an_account_of_another_tenant_is_not_found_even_for_its_admin(admin, other_tenant, instruments):
    foreign = make_account(other_tenant, "FOREIGN")
    refused = admin.api.post("/orders", order_body(foreign))
    assert refused.status_code == 404, refused.json_body


def test_a_superuser_trader_trades_every_account_of_the_tenant(granted_trader, tenant, instruments):
    """guardian's rule, kept by the one-statement grant check: superusers need no grant."""
    other = make_account(tenant, "PAPER3")
    granted_trader.user.is_superuser = True
    granted_trader.user.save(update_fields=["is_superuser"])
    assert granted_trader.api.post("/orders", order_body(other)).status_code == 201


@pytest.mark.parametrize(
    ("symbol", "currency", "status", "field"),
    [
        ("aapl", None, 201, None),
        ("SHOP", None, 422, "currency"),
        ("SHOP", "cad", 201, None),
        ("NOPE", None, 422, "symbol"),
    ],
)
def test_listings_are_read_with_the_account(granted_trader, account, symbol, currency, status, field):
    body = order_body(account, symbol=symbol, currency=currency if currency else ..., limit_price="10")
    response = granted_trader.api.post("/orders", body)
    assert response.status_code == status, response.json_body
    if field:
        assert field in response.json_body["details"], response.json_body
    else:
        assert response.json_body["symbol"] == symbol.upper()


@pytest.mark.django_db(transaction=True)
def test_the_snapshot_sees_a_halt_committed_while_the_order_waited_for_the_lock(granted_trader, account):
    """The lock and the snapshot travel in one round trip; the snapshot still sees what was
    committed while the order waited for the lock (its statement's own snapshot)."""
    result: dict[str, Any] = {}

    def place() -> None:
        try:
            result["response"] = granted_trader.api.post("/orders", order_body(account))
        finally:
            connections.close_all()

    with transaction.atomic():
        account_lock(account_id=account.id)
        worker = threading.Thread(target=place)
        worker.start()
        deadline = time.monotonic() + 10
        with connection.cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'")
                if cursor.fetchone()[0]:
                    break
                time.sleep(0.02)
            else:
                pytest.fail("the placement never waited for the account lock")
        AccountRisk.objects.update_or_create(
            account=account,
            defaults={"tenant": account.tenant, "trading_state": "HALTED", "updated_at": timezone.now()},
        )
    worker.join(timeout=20)
    response = result["response"]
    assert response.status_code == 423, response.json_body
    assert Order.objects.count() == 0


def test_values_are_quoted_in_the_one_statement(granted_trader, account):
    """The rows' statement carries its values as literals: quotes, backslashes, `%` and non-ASCII
    text come back as they were sent."""
    metadata = {"note": "50% off 'quoted' \\ back\\slash %s %(x)s ü €", "nested": {"n": [1, None, True]}}
    client_order_id = "q.1:x-_"
    response = granted_trader.api.post(
        "/orders",
        order_body(account, client_order_id=client_order_id, metadata=metadata),
        headers={"Idempotency-Key": "quote-%s-'"},
    )
    assert response.status_code == 201, response.json_body
    order = Order.objects.get(id=response.json_body["id"])
    assert (order.client_order_id, order.metadata) == (client_order_id, metadata)
    fetched = granted_trader.api.get(f"/orders/{order.id}").json_body
    assert (fetched["client_order_id"], fetched["metadata"]) == (client_order_id, metadata)
    replay = granted_trader.api.post(
        "/orders",
        order_body(account, client_order_id=client_order_id, metadata=metadata),
        headers={"Idempotency-Key": "quote-%s-'"},
    )
    assert replay.status_code == 201 and replay.json_body == response.json_body


def test_a_grant_to_a_group_of_the_trader_lets_them_trade(granted_trader, trader, tenant, instruments):
    """guardian's group grants, kept by the one-statement grant check."""
    other = make_account(tenant, "PAPER4")
    assert trader.api.post("/orders", order_body(other)).status_code == 404
    group = Group.objects.create(name=f"desk-{other.id}")
    assign_perm(TRADE_PERMISSION, group, other)
    trader.user.groups.add(group)
    assert trader.api.post("/orders", order_body(other)).status_code == 201
