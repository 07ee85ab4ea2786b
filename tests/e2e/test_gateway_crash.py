"""The gateway process killed between send and acknowledgement, then restarted: the order exists
once at IB (the simulator runs in the test; the gateway is the real `manage.py run_gateway`)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from apps.brokers.ib.models import OrderTicket, ReconciliationRun, TicketStatus
from apps.brokers.ibsim.testing import simulator_session
from apps.brokers.models import ConnectionStatus
from tests.brokers.ib.conftest import CODE, Applier, account_status, make_ib_account, order_state, place, wait_for
from tests.e2e.processes import child_environment, running

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(name="sim")
def simulator() -> Iterator[object]:
    with simulator_session(accounts=(CODE,)) as started:
        yield started


@pytest.fixture(name="applier")
def broker_event_applier() -> Applier:
    return Applier()


COMMAND = ".venv/bin/python manage.py run_gateway --account " + CODE
FAST = {
    "IB_GATEWAY_HEARTBEAT_SECONDS": "1",
    "IB_GATEWAY_HEARTBEAT_TIMEOUT_SECONDS": "2",
    "IB_GATEWAY_BREAKER_OPEN_SECONDS": "1",
    "IB_GATEWAY_BACKOFF_CAP_SECONDS": "1",
}


def test_gateway_killed_before_ack_order_exists_once_at_ib(sim, admin, applier):
    account = make_ib_account(admin.tenant, sim)
    environment = child_environment(**FAST)
    sim.set_price("AAPL", 190)
    with running(COMMAND, environment, "gateway-crash-1") as first:
        wait_for(lambda: account_status(account) == ConnectionStatus.CONNECTED, timeout=30)
        sim.delay_acks(3.0)  # IB has the order in hand, but says nothing yet
        order = place(admin, account, limit_price="150.00")
        ticket = wait_for(
            lambda: OrderTicket.objects.filter(account=account, client_order_id=order["client_order_id"]).first()
        )
        assert ticket.status == TicketStatus.SUBMITTING
        time.sleep(0.3)  # the placeOrder is on the wire
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    sim.delay_acks(0)
    time.sleep(3.5)  # IB processes (or drops) what the dead session sent
    with running(COMMAND, environment, "gateway-crash-2"):
        wait_for(lambda: account_status(account) == ConnectionStatus.CONNECTED, timeout=30)
        wait_for(lambda: order_state(order["id"], applier) == "ROUTED", timeout=15)
    at_ib = [o for o in sim.orders() if o.order_ref == order["client_order_id"]]
    assert len(at_ib) == 1
    ticket.refresh_from_db()
    assert ticket.perm_id == at_ib[0].perm_id
    run = ReconciliationRun.objects.filter(account=account, trigger="RECONNECT").order_by("-created_at").first()
    kinds = list(run.drifts.filter(order_id=order["id"]).values_list("kind", "action"))
    # Whichever way the crash fell, the order was resolved by orderRef, never sent twice.
    assert kinds in ([("NOT_AT_IB", "RESEND")], [("UNACKNOWLEDGED_ORDER", "PUBLISH_ACCEPTED")])


def test_ack_lost_order_found_by_order_ref_is_bound_not_resent(sim, admin, applier):
    """The send reached IB, the acknowledgement was lost: the restart binds, it does not resend."""
    account = make_ib_account(admin.tenant, sim)
    environment = child_environment(**FAST)
    sim.set_price("AAPL", 190)
    with running(COMMAND, environment, "gateway-ack-1") as first:
        wait_for(lambda: account_status(account) == ConnectionStatus.CONNECTED, timeout=30)
        order = place(admin, account, limit_price="150.00")
        wait_for(lambda: order_state(order["id"], applier) == "ROUTED", timeout=15)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    # Forget the acknowledgement, as if the process had died before writing it.
    OrderTicket.objects.filter(account=account).update(status=TicketStatus.SUBMITTING, perm_id=None)
    with running(COMMAND, environment, "gateway-ack-2"):
        wait_for(lambda: OrderTicket.objects.filter(account=account, status=TicketStatus.WORKING).exists(), 30)
    (at_ib,) = [o for o in sim.orders() if o.order_ref == order["client_order_id"]]
    assert OrderTicket.objects.get(account=account).perm_id == at_ib.perm_id
    # Bound from IB's open orders (the startup sync or the reconciliation), never sent again.
    assert not ReconciliationRun.objects.filter(account=account, drifts__action="RESEND").exists()
