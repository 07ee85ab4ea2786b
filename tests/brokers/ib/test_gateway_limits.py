"""The connector at its limits: the kill switch's cancel-all, order-id leases raced by two
writers, and IB's 50 messages/second measured at the simulator while 1,000 orders go out."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection
from ib_async import Contract, LimitOrder

from apps.brokers.ib import store
from apps.brokers.ib.models import OrderTicket, ReconciliationRun
from apps.brokers.ibsim.testing import connect
from apps.brokers.models import ConnectionStatus
from apps.orders.models import Order
from apps.orders.services.risk import kill_switch_enforce
from apps.orders.services.routing import send
from tests.brokers.ib.conftest import account_status, fast_config, make_ib_account, order_state, place, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_kill_switch_cancel_all_cancels_every_working_order_of_the_account_only(sim, admin, run_gateway, applier):
    account = make_ib_account(admin.tenant, sim)
    run_gateway(fast_config(account))
    wait_for(lambda: account_status(account) == ConnectionStatus.CONNECTED)
    sim.set_price("AAPL", 190)
    # Another account of the same IB login has a working order (placed by another client).
    other = connect(sim, client_id=9)
    try:
        other.placeOrder(Contract(conId=265598, exchange="SMART"), LimitOrder("BUY", 1, 100, account="DU1000002"))
        other.sleep(0.3)
    finally:
        other.disconnect()
    orders = [place(admin, account, limit_price=f"15{i}.00") for i in range(3)]
    for order in orders:
        wait_for(lambda order=order: order_state(order["id"], applier) == "ROUTED")
    engaged = admin.api.post("/risk/kill-switch", {"scope": "ACCOUNT", "scope_id": str(account.id), "reason": "test"})
    assert engaged.status_code == 201, engaged.json_body
    assert kill_switch_enforce(kill_switch_id=engaged.json_body["id"]) == 3  # what run_risk_actions does
    wait_for(lambda: all(order_state(o["id"], applier) == "CANCELED" for o in orders), timeout=15)
    statuses = Counter((o.account, o.status) for o in sim.orders())
    assert statuses == {("DU1000001", "Cancelled"): 3, ("DU1000002", "Submitted"): 1}
    assert not OrderTicket.objects.filter(account=account).exclude(status="CANCELLED").exists()


def test_cancel_all_alone_cancels_orders_the_oms_still_thinks_working(sim, admin, run_gateway, applier):
    """The global cancel of an account (`"all": true`, no order list) cancels every ticketed working
    order, including one whose own cancel the OMS never sent."""
    account = make_ib_account(admin.tenant, sim)
    run_gateway(fast_config(account))
    wait_for(lambda: account_status(account) == ConnectionStatus.CONNECTED)
    sim.set_price("AAPL", 190)
    orders = [place(admin, account, limit_price="150.00") for _ in range(2)]
    for order in orders:
        wait_for(lambda order=order: order_state(order["id"], applier) == "ROUTED")
    payload = {"msg_id": "all-1", "tenant_id": str(admin.tenant.id), "account_id": str(account.id), "orders": [],
               "all": True}  # fmt: skip
    send(account_id=account.id, kind="oms.cancel", payload=payload)
    wait_for(lambda: all(order_state(o["id"], applier) == "CANCELED" for o in orders), timeout=15)
    assert {o.status for o in sim.orders()} == {"Cancelled"}


def test_racing_leases_never_hand_out_the_same_order_id():
    login, client_id = "10.0.0.1:4002", 21
    store.order_id_floor(login=login, client_id=client_id, next_valid_id=500)
    leased: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def lease_many() -> None:
        try:
            start.wait()
            mine = [store.order_id_lease(login=login, client_id=client_id, next_valid_id=0) for _ in range(60)]
            with lock:
                leased.extend(mine)
        finally:
            connection.close()

    threads = [threading.Thread(target=lease_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(leased) == 240 == len(set(leased))
    assert min(leased) == 500 and max(leased) == 739
    # IB's nextValidId going backwards (a gateway restart that forgot) never lowers the mark.
    assert store.order_id_floor(login=login, client_id=client_id, next_valid_id=1) == 739
    assert store.order_id_lease(login=login, client_id=client_id, next_valid_id=3) == 740


def test_message_rate_at_the_simulator_stays_under_50_per_second_for_1000_orders(sim, admin, run_gateway, applier):
    account = make_ib_account(admin.tenant, sim)
    gateway = run_gateway(fast_config(account))
    wait_for(lambda: account_status(account) == ConnectionStatus.CONNECTED)
    sim.rate_limit(True, per_second=50)
    sim.peak_message_rate(reset=True)
    sim.set_price("AAPL", 190)
    placed = []
    for batch in range(10):
        body = {"orders": [{"account_id": str(account.id), "symbol": "AAPL", "side": "BUY", "quantity": "1",
                            "order_type": "LMT", "limit_price": "150.00", "time_in_force": "DAY",
                            "client_order_id": f"rate-{batch}-{i}"} for i in range(100)]}  # fmt: skip
        response = admin.api.post("/orders/batch", body)
        assert response.status_code == 200, response.json_body
        placed += [r["order"]["client_order_id"] for r in response.json_body["results"] if r["status"] == 201]
    assert len(placed) == 1000
    wait_for(lambda: OrderTicket.objects.filter(account=account, status="WORKING").count() == 1000, timeout=120)
    peak = sim.peak_message_rate()
    assert 0 < peak <= 50, peak
    assert set(placed) <= {o.order_ref for o in sim.orders()}
    assert gateway.gateway.context.pacer.sent >= 1000
    # Never over the limit: no error 100, no dropped socket (one reconnect run: the first connect).
    assert ReconciliationRun.objects.filter(account=account, trigger="RECONNECT").count() == 1
    applier()
    assert Order.objects.filter(account=account, state="ROUTED").count() == 1000
