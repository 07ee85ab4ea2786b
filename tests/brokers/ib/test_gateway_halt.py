"""HALTED: the gateway's circuit breaker open after repeated failed connects (orders held or
refused per the account's setting), and an operator's halt (orders refused until resumed)."""

from __future__ import annotations

import re

import pytest

from apps.audit.models import AuditLog
from apps.brokers.models import BrokerAccount, ConnectionStatus
from apps.events.models import OutboxEvent
from apps.orders.models import Order
from tests.brokers.ib.conftest import account_status, fast_config, make_ib_account, order_state, place, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def order_body(account):
    return {"account_id": str(account.id), "symbol": "AAPL", "side": "BUY", "quantity": "1", "order_type": "LMT",
            "limit_price": "150.00", "time_in_force": "DAY"}  # fmt: skip


def test_open_circuit_breaker_halts_the_account_and_holds_orders_until_ib_is_back(sim, admin, run_gateway, applier):
    account = make_ib_account(admin.tenant, sim)
    sim.set_price("AAPL", 190)
    sim.refuse_connections(4.0)  # IB Gateway restarting
    run_gateway(fast_config(account, breaker_threshold=2, breaker_open_seconds=1.0))
    wait_for(lambda: account_status(account) == ConnectionStatus.HALTED, timeout=10)
    shown = admin.api.get(f"/brokers/accounts/{account.id}").json_body
    assert (shown["status"], shown["halted"]) == ("HALTED", False)
    assert re.match(r"circuit breaker open after \d+ failed connects; next probe in \d+ s", shown["status_reason"])
    assert OutboxEvent.objects.filter(kind="broker.halted", aggregate_id=str(account.id)).exists()
    assert AuditLog.objects.filter(
        action="broker_account.status", resource_id=str(account.id), after__status="HALTED"
    ).exists()
    held = place(admin, account)  # HOLD (the default): accepted, kept NEW
    assert held["state"] == "NEW"
    wait_for(lambda: account_status(account) == ConnectionStatus.CONNECTED, timeout=20)
    wait_for(lambda: order_state(held["id"], applier) == "ROUTED")
    assert OutboxEvent.objects.filter(kind="broker.reconnected", aggregate_id=str(account.id)).exists()


def test_breaker_halt_refuses_orders_with_503_when_the_account_says_refuse(sim, admin):
    account = make_ib_account(
        admin.tenant, sim, status="HALTED", status_reason="circuit breaker open", orders_when_disconnected="REFUSE"
    )
    response = admin.api.post("/orders", order_body(account))
    assert (response.status_code, response.json_body["code"]) == (503, "UNAVAILABLE")
    assert not Order.objects.filter(account=account).exists()


def test_operator_halt_refuses_orders_outranks_the_gateway_and_resume_reconnects(sim, admin, run_gateway, applier):
    account = make_ib_account(admin.tenant, sim)
    run_gateway(fast_config(account))
    wait_for(lambda: account_status(account) == ConnectionStatus.CONNECTED)
    response = admin.api.post(f"/brokers/accounts/{account.id}/halt", {"reason": "broker migration"})
    assert response.status_code == 200
    assert (response.json_body["status"], response.json_body["halted"]) == ("HALTED", True)
    assert response.json_body["status_reason"] == "halted by operator: broker migration"
    refused = admin.api.post("/orders", order_body(account))
    assert refused.status_code == 409
    assert (
        refused.json_body["message"]
        == f"Broker account {account.account_code} is HALTED: halted by operator: broker migration"
    )
    # The gateway reconnecting does not lift an operator's halt.
    sim.drop_connections()
    wait_for(lambda: account.reconciliation_runs.filter(trigger="RECONNECT").count() == 2)
    assert account_status(account) == ConnectionStatus.HALTED
    connect = admin.api.post(f"/brokers/accounts/{account.id}/connect")
    assert connect.status_code == 409
    resumed = admin.api.post(f"/brokers/accounts/{account.id}/resume")
    assert (resumed.json_body["status"], resumed.json_body["halted"]) == ("RECONNECTING", False)
    wait_for(lambda: account_status(account) == ConnectionStatus.CONNECTED)  # the gateway's next heartbeat
    assert admin.api.post(f"/brokers/accounts/{account.id}/resume").status_code == 409  # not halted
    sim.set_price("AAPL", 190)
    order = place(admin, account)
    wait_for(lambda: order_state(order["id"], applier) == "ROUTED")
    actions = list(
        AuditLog.objects.filter(
            resource_id=str(account.id), action__in=["broker_account.halt", "broker_account.resume"]
        )
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions == ["broker_account.halt", "broker_account.resume"]
    kinds = set(OutboxEvent.objects.filter(aggregate_id=str(account.id)).values_list("kind", flat=True))
    assert {"broker.halted", "broker.reconnecting", "broker.reconnected"} <= kinds


def test_halt_needs_a_reason(sim, admin):
    account = make_ib_account(admin.tenant, sim)
    response = admin.api.post(f"/brokers/accounts/{account.id}/halt", {"reason": ""})
    assert response.status_code == 422
    assert response.json_body["code"] == "VALIDATION_ERROR"
    assert BrokerAccount.objects.get(id=account.id).status == ConnectionStatus.DISCONNECTED
