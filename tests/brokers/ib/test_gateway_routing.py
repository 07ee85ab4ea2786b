"""The gateway (service in a thread, real ib_async) against the simulator over TCP."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from apps.brokers.ib.models import OrderTicket, ReconciliationRun
from apps.brokers.ib.store import GatewayLock, GatewayLocked
from apps.brokers.models import BrokerAccount, ConnectionStatus
from apps.orders.models import Execution, Order
from tests.brokers.ib.conftest import (
    CLIENT_ID,
    account_status,
    fast_config,
    make_ib_account,
    order_state,
    place,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


def connected(sim, admin, run_gateway, **account_fields):
    account = make_ib_account(admin.tenant, sim, **account_fields)
    gateway = run_gateway(fast_config(account))
    wait_for(lambda: account_status(account) == ConnectionStatus.CONNECTED)
    return account, gateway


def at_ib(sim, client_order_id):
    return [o for o in sim.orders() if o.order_ref == client_order_id]


def test_limit_order_routed_then_filled(sim, admin, run_gateway, applier):
    account, _ = connected(sim, admin, run_gateway)
    sim.set_price("AAPL", 190)
    order = place(admin, account, limit_price="150.00")
    wait_for(lambda: order_state(order["id"], applier) == "ROUTED")
    (sim_order,) = at_ib(sim, order["client_order_id"])
    assert Order.objects.get(id=order["id"]).broker_order_id == str(sim_order.perm_id)
    sim.set_price("AAPL", 149)
    wait_for(lambda: order_state(order["id"], applier) == "FILLED")
    assert applier.kinds(order["id"]) == ["accepted", "execution"]


def test_ib_reject_201_rejects_with_ib_reason(sim, admin, run_gateway, applier):
    account, _ = connected(sim, admin, run_gateway)
    sim.reject_next(201, "Order rejected - reason:Insufficient margin for this trade")
    order = place(admin, account)
    wait_for(lambda: order_state(order["id"], applier) == "REJECTED")
    assert (
        Order.objects.get(id=order["id"]).reject_reason == "Order rejected - reason:Insufficient margin for this trade"
    )
    assert at_ib(sim, order["client_order_id"]) == []


def test_unmapped_order_refused_before_ib(sim, admin, run_gateway, applier):
    account, _ = connected(sim, admin, run_gateway)
    order = place(admin, account, order_type="MKT", limit_price=None, outside_rth=True)
    wait_for(lambda: order_state(order["id"], applier) == "REJECTED")
    reason = Order.objects.get(id=order["id"]).reject_reason
    assert reason == "refused before IB: IB does not work market orders outside regular trading hours; send a LMT order"
    assert at_ib(sim, order["client_order_id"]) == []


def test_bracket_reaches_ib_as_parent_children_and_oca(sim, admin, run_gateway, applier):
    account, _ = connected(sim, admin, run_gateway)
    sim.set_price("AAPL", 190)
    order = place(
        admin,
        account,
        limit_price="150.00",
        order_class="BRACKET",
        take_profit={"limit_price": "210.00"},
        stop_loss={"stop_price": "140.00"},
    )
    wait_for(lambda: order_state(order["id"], applier) == "ROUTED")
    parent = at_ib(sim, order["client_order_id"])[0]
    legs = sorted((o for o in sim.orders() if o.parent_perm_id == parent.perm_id), key=lambda o: o.order_ref)
    assert [(o.order_ref, o.order_type, o.oca_group != "") for o in legs] == [
        (order["client_order_id"] + ".sl", "STP", True),
        (order["client_order_id"] + ".tp", "LMT", True),
    ]


def test_refused_modification_of_live_order_keeps_it_working(sim, admin, run_gateway, applier):
    """ib_async marks the trade Cancelled on IB's 201 to a modification; the order still works."""
    account, gateway = connected(sim, admin, run_gateway)
    sim.set_price("AAPL", 190)
    order = place(admin, account, quantity="10", limit_price="150.00")
    wait_for(lambda: order_state(order["id"], applier) == "ROUTED")
    (sim_order,) = at_ib(sim, order["client_order_id"])
    sim.fill(sim_order.perm_id, 4)
    wait_for(lambda: order_state(order["id"], applier) == "PARTIALLY_FILLED")
    item = {"order_id": order["id"], "tenant_id": str(admin.tenant.id), "client_order_id": order["client_order_id"],
            "symbol": "AAPL", "con_id": 265598, "side": "BUY", "quantity": "4", "order_type": "LMT",
            "limit_price": "150", "time_in_force": "DAY"}  # fmt: skip
    gateway.call(lambda g: g.router.modify(item))  # IB: new quantity does not exceed the filled 4 → 201
    wait_for(lambda: "rejected" in applier.kinds(order["id"]) or (applier() and False))
    trade = next(t for t in gateway.gateway.context.ib.trades() if t.order.orderRef == order["client_order_id"])
    assert trade.orderStatus.status == "Cancelled"  # ib_async's belief
    assert sim.order(CLIENT_ID, sim_order.order_id).status == "Submitted"  # IB's truth
    assert order_state(order["id"], applier) == "PARTIALLY_FILLED"
    sim.fill(sim_order.perm_id, 6)
    wait_for(lambda: order_state(order["id"], applier) == "FILLED")
    assert Order.objects.get(id=order["id"]).filled_quantity == Decimal(10)


def test_next_valid_id_going_backwards_never_reuses_an_id(sim, admin, run_gateway, applier):
    account, _ = connected(sim, admin, run_gateway)
    sim.set_price("AAPL", 190)
    first = place(admin, account, limit_price="150.00")
    wait_for(lambda: order_state(first["id"], applier) == "ROUTED")
    (before,) = at_ib(sim, first["client_order_id"])
    # A gateway restart that forgot this client's ids: nextValidId starts again at 1.
    sim.call(lambda: sim.broker.state.last_order_ids.__setitem__(CLIENT_ID, 0))
    sim.drop_connections()
    wait_for(lambda: ReconciliationRun.objects.filter(account=account, trigger="RECONNECT").count() == 2)
    wait_for(lambda: account_status(account) == ConnectionStatus.CONNECTED)
    second = place(admin, account, limit_price="151.00")
    wait_for(lambda: order_state(second["id"], applier) == "ROUTED")
    (after,) = at_ib(sim, second["client_order_id"])
    assert after.order_id > before.order_id
    assert after.perm_id != before.perm_id
    unchanged = sim.order(CLIENT_ID, before.order_id)
    assert (unchanged.order_ref, unchanged.limit_price, unchanged.status) == (
        first["client_order_id"],
        Decimal("150.00"),
        "Submitted",
    )


def test_second_gateway_for_same_login_and_client_id_refused(sim, admin):
    account = make_ib_account(admin.tenant, sim)
    lock = GatewayLock(f"{sim.host}:{sim.port}", CLIENT_ID)
    lock.acquire()
    try:
        with pytest.raises(GatewayLocked):
            GatewayLock(f"{sim.host}:{sim.port}", CLIENT_ID).acquire()
        with pytest.raises(CommandError, match="another gateway process holds IB login"):
            call_command("run_gateway", account=account.account_code)
    finally:
        lock.release()
    assert account_status(account) == ConnectionStatus.DISCONNECTED  # the refused one never touched it


def test_disconnect_mid_fill_burst_reconciles_missed_fills(sim, admin, run_gateway, applier):
    account, _ = connected(sim, admin, run_gateway)
    sim.set_price("AAPL", 190)
    order = place(admin, account, quantity="100", limit_price="150.00")
    wait_for(lambda: order_state(order["id"], applier) == "ROUTED")
    (sim_order,) = at_ib(sim, order["client_order_id"])
    for _ in range(3):
        sim.fill(sim_order.perm_id, 10)
    sim.refuse_connections(1.5)  # the link drops in the middle of the burst
    for _ in range(3):
        sim.fill(sim_order.perm_id, 20)
    wait_for(lambda: ReconciliationRun.objects.filter(account=account, trigger="RECONNECT").count() == 2, timeout=15)
    wait_for(lambda: order_state(order["id"], applier) == "PARTIALLY_FILLED" and Order.objects.get(
        id=order["id"]).filled_quantity == Decimal(90))  # fmt: skip
    executions = Execution.objects.filter(order_id=order["id"])
    assert executions.count() == 6 == len(sim.executions())
    assert sorted(e.broker_exec_id for e in executions) == sorted(e.exec_id for e in sim.executions())
    (position,) = sim.positions()
    assert sum(e.quantity for e in executions) == position.quantity == Decimal(90)
    run = ReconciliationRun.objects.filter(account=account, trigger="RECONNECT").order_by("-created_at").first()
    kinds = sorted(run.drifts.values_list("kind", flat=True))
    assert kinds.count("MISSING_FILL") >= 1
    assert "POSITION_BREAK" not in kinds


def test_dead_socket_detected_by_heartbeat_and_ready_503(sim, admin, run_gateway, applier, settings):
    settings.HEALTH_GATEWAY_STALE_SECONDS = 1
    account, _ = connected(sim, admin, run_gateway)
    wait_for(lambda: admin.api.get("/health/ready").json_body["checks"]["gateways"]["ok"])
    # The simulator stops answering while its sockets stay open (a hung gateway).
    frozen = threading.Thread(target=lambda: sim.call(lambda: time.sleep(3.0), timeout=10), daemon=True)
    frozen.start()
    response = wait_for(lambda: (r := admin.api.get("/health/ready")).status_code == 503 and r, timeout=5)
    assert response.json_body["checks"]["gateways"] == {
        "ok": False,
        "error": f"gateway heartbeat older than 1 s for {account.account_code}",
    }
    wait_for(lambda: "heartbeat" in BrokerAccount.objects.get(id=account.id).status_reason, timeout=5)
    frozen.join()
    wait_for(lambda: account_status(account) == ConnectionStatus.CONNECTED, timeout=15)
    wait_for(lambda: admin.api.get("/health/ready").status_code == 200, timeout=5)


def test_pacing_keeps_under_ib_limit_with_ib_async_throttle_off(sim, admin, run_gateway, applier):
    account, gateway = connected(sim, admin, run_gateway)
    assert gateway.gateway.context.ib.client.MaxRequests == 0
    sim.rate_limit(True, per_second=50)
    sim.set_price("AAPL", 190)
    orders = [place(admin, account, limit_price="150.00") for _ in range(120)]
    wait_for(lambda: OrderTicket.objects.filter(account=account, status="WORKING").count() == 120, timeout=30)
    refs = {o.order_ref for o in sim.orders()}
    assert {o["client_order_id"] for o in orders} <= refs
    # Never over the limit: no error 100, no dropped socket (one reconnect run: the first connect).
    assert ReconciliationRun.objects.filter(account=account, trigger="RECONNECT").count() == 1


def test_manual_reconcile_requested_through_api_is_run_by_gateway(sim, admin, run_gateway):
    account, _ = connected(sim, admin, run_gateway)
    response = admin.api.post(f"/brokers/accounts/{account.id}/reconcile")
    assert response.status_code == 202
    assert (response.json_body["trigger"], response.json_body["status"]) == ("MANUAL", "REQUESTED")
    run_id = response.json_body["id"]
    done = wait_for(
        lambda: (r := admin.api.get(f"/reconciliation/runs/{run_id}")).json_body["status"] == "COMPLETED" and r
    )
    assert done.json_body["drifts"] == []
    listed = admin.api.get("/reconciliation/runs").json_body["items"]
    assert run_id in [run["id"] for run in listed]


def test_refuse_mode_answers_503_while_disconnected(sim, admin):
    account = make_ib_account(admin.tenant, sim, orders_when_disconnected="REFUSE", status="RECONNECTING")
    response = admin.api.post("/orders", {"account_id": str(account.id), "symbol": "AAPL", "side": "BUY",
                                          "quantity": "1", "order_type": "MKT", "time_in_force": "DAY"})  # fmt: skip
    assert response.status_code == 503
    assert response.json_body["code"] == "UNAVAILABLE"
    assert response["Retry-After"] == "5"
    assert Order.objects.filter(account=account).count() == 0


def test_hold_mode_keeps_order_new_until_connected(sim, admin, run_gateway, applier):
    account = make_ib_account(admin.tenant, sim, status="DISCONNECTED")
    sim.set_price("AAPL", 190)
    order = place(admin, account, limit_price="150.00")
    assert order["state"] == "NEW"
    run_gateway(fast_config(account))
    wait_for(lambda: order_state(order["id"], applier) == "ROUTED")


def test_backend_outage_keeps_socket_and_1101_resubscribes_market_data(sim, admin, run_gateway):
    account = make_ib_account(admin.tenant, sim)
    run_gateway(fast_config(account, market_data=(("AAPL", 265598),)))
    wait_for(lambda: account_status(account) == ConnectionStatus.CONNECTED)

    def subscriptions() -> int:
        return sim.call(lambda: sum(len(s.subs.market) for s in sim.server.sessions))

    wait_for(lambda: subscriptions() == 1)
    sessions_before = sim.call(lambda: {id(s) for s in sim.server.sessions})
    sim.backend_down(data_lost=True)
    wait_for(lambda: BrokerAccount.objects.get(id=account.id).status_reason.startswith("IB connectivity lost (1100)"))
    sim.backend_up()
    wait_for(lambda: BrokerAccount.objects.get(id=account.id).status_reason.endswith("market data resubscribed)"))
    assert account_status(account) == ConnectionStatus.CONNECTED
    assert subscriptions() == 1
    assert sim.call(lambda: {id(s) for s in sim.server.sessions}) == sessions_before  # the socket was kept


def test_modify_resends_same_order_id_then_cancel_202_cancels(sim, admin, run_gateway, applier):
    account, _ = connected(sim, admin, run_gateway)
    sim.set_price("AAPL", 190)
    order = place(admin, account, limit_price="150.00")
    wait_for(lambda: order_state(order["id"], applier) == "ROUTED")
    (before,) = at_ib(sim, order["client_order_id"])
    version = Order.objects.get(id=order["id"]).version
    response = admin.api.patch(
        f"/orders/{order['id']}", {"limit_price": "151.00"}, headers={"If-Match": f'"{version}"'}
    )
    assert response.status_code == 200, response.json_body
    wait_for(lambda: order_state(order["id"], applier) == "ROUTED")
    (after,) = at_ib(sim, order["client_order_id"])
    assert (after.order_id, after.perm_id, after.limit_price) == (before.order_id, before.perm_id, Decimal("151.00"))
    assert admin.api.post(f"/orders/{order['id']}/cancel").status_code == 202
    wait_for(lambda: order_state(order["id"], applier) == "CANCELED")
    assert sim.order(CLIENT_ID, before.order_id).status == "Cancelled"
    assert len(sim.orders()) == 1
