"""Reports the OMS did not ask for: commission reports that come late, and orders placed outside
the OMS (another client id, TWS) adopted on reconciliation. Gateway in a thread, real ib_async,
simulator over TCP."""

from __future__ import annotations

from decimal import Decimal

import pytest
from ib_async import Contract, LimitOrder

from apps.audit.models import AuditLog
from apps.brokers.ib import wire
from apps.brokers.ib.models import OrderTicket, ReconciliationRun
from apps.brokers.ibsim.testing import connect
from apps.brokers.models import ConnectionStatus
from apps.events.models import OutboxEvent
from apps.orders.models import Execution, Order
from apps.orders.services.broker_events import BrokerEvent, Fill, broker_event_apply
from apps.portfolio.models import Position
from tests.brokers.ib.conftest import CODE, account_status, fast_config, make_ib_account, order_state, place, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def at_ib(sim, client_order_id):
    return [o for o in sim.orders() if o.order_ref == client_order_id]


def test_late_commission_reports_are_applied_whenever_they_arrive(sim, admin, run_gateway, applier):
    account = make_ib_account(admin.tenant, sim)
    run_gateway(fast_config(account))  # commission grace 0.3 s
    wait_for(lambda: account_status(account) == ConnectionStatus.CONNECTED)
    sim.delay_commissions(1.5)  # each report 1.5 s after its execution: after the fill went out
    sim.set_price("AAPL", 190)
    buy = place(admin, account, quantity="10", limit_price="150.00")
    wait_for(lambda: order_state(buy["id"], applier) == "ROUTED")
    (sim_buy,) = at_ib(sim, buy["client_order_id"])
    sim.fill(sim_buy.perm_id, 10, price=150)
    wait_for(lambda: order_state(buy["id"], applier) == "FILLED")
    sell = place(admin, account, side="SELL", quantity="10", limit_price="200.00")
    wait_for(lambda: order_state(sell["id"], applier) == "ROUTED")
    (sim_sell,) = at_ib(sim, sell["client_order_id"])
    sim.fill(sim_sell.perm_id, 10, price=160)
    wait_for(lambda: order_state(sell["id"], applier) == "FILLED")
    commissions = {e.exec_id: e.commission for e in sim.executions()}
    assert all(commissions.values())

    def booked() -> dict[str, Decimal]:
        applier()
        return dict(Execution.objects.filter(account_id=account.id).values_list("broker_exec_id", "commission"))

    wait_for(lambda: booked() == commissions, timeout=10)
    assert [f["kind"] for f in applier.seen].count("commission") == 2
    position = Position.objects.get(account=account)
    total = sum(commissions.values())
    assert position.quantity == 0
    assert position.commissions == total
    assert position.realized_pnl == Decimal(100) - total  # (160 - 150) × 10, less both commissions
    # The same report again (a replay) changes nothing.
    exec_id = next(iter(commissions))
    version = position.version
    fill = Fill(exec_id, Decimal(10), Decimal(150), commissions[exec_id], "USD", sim.executions()[0].time)
    broker_event_apply(event=BrokerEvent("commission", account.id, Order.objects.get(id=buy["id"]).id, fill=fill))
    assert Position.objects.get(account=account).version == version
    assert AuditLog.objects.filter(action="order.broker_commission").count() == 2


def test_orders_of_another_client_are_adopted_with_their_fills(sim, admin, run_gateway, applier):
    account = make_ib_account(admin.tenant, sim, client_id=0)  # the master client sees every client's orders
    gateway = run_gateway(fast_config(account))
    wait_for(lambda: account_status(account) == ConnectionStatus.CONNECTED)
    sim.set_price("AAPL", 190)
    other = connect(sim, client_id=9)
    try:
        contract = Contract(conId=265598, exchange="SMART")
        filled = other.placeOrder(contract, LimitOrder("BUY", 5, 150, orderRef="by-hand-1", account=CODE))
        other.placeOrder(contract, LimitOrder("SELL", 3, 250, orderRef="by-hand-2", account=CODE))
        ibm = Contract(conId=8314, exchange="SMART")  # not in the OMS's instrument universe
        other.placeOrder(ibm, LimitOrder("BUY", 1, 100, orderRef="by-hand-ibm", account=CODE))
        other.sleep(0.3)
        sim.fill(filled.order.permId or at_ib(sim, "by-hand-1")[0].perm_id, 5, price=150)
        other.sleep(0.3)
    finally:
        other.disconnect()
    response = admin.api.post(f"/brokers/accounts/{account.id}/reconcile")
    run_id = response.json_body["id"]
    wait_for(lambda: ReconciliationRun.objects.get(id=run_id).status == "COMPLETED")
    applier()
    run = admin.api.get(f"/reconciliation/runs/{run_id}").json_body
    adoptions = [d for d in run["drifts"] if d["action"] == "ADOPT"]
    assert sorted(d["client_order_id"] for d in adoptions) == ["by-hand-1", "by-hand-2"]
    resolutions = {d["client_order_id"]: d["resolution"] for d in adoptions}
    assert "(another API client or TWS)" in resolutions["by-hand-1"]  # completed: IB does not say which
    assert "(client id 9)" in resolutions["by-hand-2"]
    (stranger,) = [d for d in run["drifts"] if d["client_order_id"] == "by-hand-ibm"]
    assert (stranger["action"], stranger["kind"]) == ("FLAG", "UNKNOWN_ORDER_AT_IB")
    assert "conId 8314 (IBM) is not an OMS instrument" in stranger["resolution"]
    (fill_drift,) = [d for d in run["drifts"] if d["kind"] == "MISSING_FILL"]
    assert fill_drift["resolution"].startswith("applied to the adopted order")
    assert not [d for d in run["drifts"] if d["kind"] == "POSITION_BREAK"]

    first = Order.objects.get(tenant=admin.tenant, client_order_id="by-hand-1")
    second = Order.objects.get(tenant=admin.tenant, client_order_id="by-hand-2")
    perm_id = at_ib(sim, "by-hand-1")[0].perm_id
    assert str(first.id) == wire.adopted_order_id(str(account.id), perm_id)
    assert (first.state, first.filled_quantity, first.broker_order_id) == ("FILLED", Decimal(5), str(perm_id))
    assert (second.state, second.side, second.limit_price) == ("ROUTED", "SELL", Decimal(250))
    assert Execution.objects.filter(order_id=first.id).count() == 1
    assert Position.objects.get(account=account).quantity == Decimal(5) == sim.positions()[0].quantity
    shown = admin.api.get(f"/orders/{first.id}").json_body
    assert shown["metadata"]["origin"] == "ADOPTED"
    assert shown["metadata"]["ib"]["perm_id"] == str(perm_id)
    assert Order.objects.get(id=second.id).metadata["ib"]["client_id"] == "9"
    assert AuditLog.objects.filter(action="order.broker_adopted", resource_id=str(first.id)).count() == 1
    syncs = OutboxEvent.objects.filter(kind="OrderStateSync", aggregate_id=str(first.id))
    assert {e.payload["action"] for e in syncs} == {"ADOPT", "PUBLISH_FILL"}

    # Reconciling again adopts nothing twice; the adopted order is now ours, and IB's callbacks
    # about it (a later fill) reach it.
    again = gateway.call(lambda g: g.sync.run("MANUAL"))
    assert list(ReconciliationRun.objects.get(id=again).drifts.values_list("client_order_id", flat=True)) == [
        "by-hand-ibm"  # still flagged, never adopted
    ]
    assert OrderTicket.objects.filter(account=account, perm_id=perm_id).count() == 1
    assert Order.objects.filter(tenant=admin.tenant, metadata__origin="ADOPTED").count() == 2
