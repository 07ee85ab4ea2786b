"""One IB login serving two broker accounts (an advisor / multi-account login: the simulator's
managedAccounts lists both): one ib_async connection, commands of each account routed through it,
callbacks and reconciliation kept apart, status per account."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from apps.brokers.ib.models import ReconciliationRun
from apps.brokers.models import ConnectionStatus
from apps.orders.models import Order
from apps.portfolio.models import Position
from tests.brokers.ib.conftest import account_status, fast_config, make_ib_account, order_state, place, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_two_accounts_on_one_login_share_one_connection(sim, admin, run_gateway, applier):
    first = make_ib_account(admin.tenant, sim)
    second = make_ib_account(admin.tenant, sim, code="DU1000002")
    gateway = run_gateway(fast_config(first), (fast_config(second),))
    for account in (first, second):
        wait_for(lambda account=account: account_status(account) == ConnectionStatus.CONNECTED)
    assert sim.call(lambda: len(sim.server.sessions)) == 1  # one socket for the login
    sim.set_price("AAPL", 190)
    one = place(admin, first, quantity="10", limit_price="150.00")
    two = place(admin, second, side="SELL", quantity="4", limit_price="230.00")
    for order in (one, two):
        wait_for(lambda order=order: order_state(order["id"], applier) == "ROUTED")
    at_ib = {o.order_ref: o for o in sim.orders()}
    assert (at_ib[one["client_order_id"]].account, at_ib[two["client_order_id"]].account) == ("DU1000001", "DU1000002")
    assert at_ib[one["client_order_id"]].order_id != at_ib[two["client_order_id"]].order_id  # one id space
    sim.fill(at_ib[one["client_order_id"]].perm_id, 10, price=150)
    sim.fill(at_ib[two["client_order_id"]].perm_id, 4, price=230)
    for order in (one, two):
        wait_for(lambda order=order: order_state(order["id"], applier) == "FILLED")
    held = {p.account: p.quantity for p in sim.positions()}
    assert Position.objects.get(account=first).quantity == held["DU1000001"] == Decimal(10)
    assert Position.objects.get(account=second).quantity == held["DU1000002"] == Decimal(-4)
    # Reconciliation keeps the accounts apart: nothing of one is a drift (or an adoption) of the other.
    for account in (first, second):
        run = gateway.call(lambda g, account=account: next(
            s for s in g.accounts if s.context.config.account_id == account.id).sync.run("MANUAL"))  # fmt: skip
        assert list(ReconciliationRun.objects.get(id=run).drifts.values_list("kind", flat=True)) == []
    assert not Order.objects.filter(metadata__origin="ADOPTED").exists()
    # Status per account: an operator's halt of one leaves the other trading.
    assert admin.api.post(f"/brokers/accounts/{second.id}/halt", {"reason": "audit"}).status_code == 200
    sim.drop_connections()
    wait_for(lambda: ReconciliationRun.objects.filter(account=first, trigger="RECONNECT").count() == 2)
    wait_for(lambda: account_status(first) == ConnectionStatus.CONNECTED)
    assert account_status(second) == ConnectionStatus.HALTED
    assert ReconciliationRun.objects.filter(account=second, trigger="RECONNECT").count() == 2


def test_run_gateway_refuses_accounts_on_different_logins(sim, admin):
    make_ib_account(admin.tenant, sim)
    make_ib_account(admin.tenant, sim, code="DU1000002", client_id=8)
    with pytest.raises(CommandError, match="are on different IB logins"):
        call_command("run_gateway", account="DU1000001,DU1000002")
