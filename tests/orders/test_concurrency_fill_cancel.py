"""A cancel racing a fill of the same order: both land, in either order, and nothing is lost."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from apps.orders.models import Execution, Order, OrderEvent
from apps.orders.services.broker_events import BrokerEvent, Fill, broker_event_apply
from apps.portfolio.models import Position
from apps.tenants.scopes import Role
from tests.conftest import make_member, make_tenant
from tests.orders.conftest import make_account, make_instruments


def race(manager, account, order_id: str, exec_id: str) -> dict[str, object]:
    """Cancel over the API and apply a full fill at the same moment, each on its own connection."""
    barrier = threading.Barrier(2)
    outcome: dict[str, object] = {}

    def cancel() -> None:
        barrier.wait()
        try:
            outcome["cancel"] = manager.api.post(f"/orders/{order_id}/cancel").status_code
        finally:
            connection.close()

    def fill() -> None:
        execution = Fill(exec_id, Decimal(100), Decimal("187.5"), Decimal(0), "USD", timezone.now())
        event = BrokerEvent(kind="execution", account_id=account.id, order_id=order_id, fill=execution)
        barrier.wait()
        try:
            outcome["fill"] = broker_event_apply(event=event).state
        finally:
            connection.close()

    threads = [threading.Thread(target=cancel), threading.Thread(target=fill)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcome


@pytest.mark.django_db(transaction=True)
def test_cancel_while_filling_ends_filled_with_one_execution_and_the_position():
    make_instruments()
    tenant = make_tenant()
    account = make_account(tenant)
    manager = make_member(tenant, Role.MANAGER)
    body = {"account_id": str(account.id), "symbol": "AAPL", "side": "BUY", "quantity": "100"}
    for round_number in range(6):
        order_id = manager.api.post("/orders", {**body, "order_type": "LMT", "limit_price": "187.50"}).json_body["id"]
        broker_event_apply(event=BrokerEvent(kind="accepted", account_id=account.id, order_id=order_id))
        outcome = race(manager, account, order_id, f"race-{round_number}")
        order = Order.objects.get(id=order_id)
        # Fill first: the cancel finds it FILLED (409). Cancel first: PENDING_CANCEL, then the fill wins.
        assert outcome["cancel"] in (202, 409)
        assert (outcome["fill"], order.state, order.filled_quantity) == ("FILLED", "FILLED", Decimal(100))
        assert Execution.objects.filter(order_id=order_id).count() == 1
        seqs = list(OrderEvent.objects.filter(order_id=order_id).order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(1, order.version + 1))
    assert Position.objects.get(account=account).quantity == Decimal(600)
