"""In flight: a partial fill whose residual now breaches a limit gets the rest cancelled, with a reason.

The applier is fed broker events directly (as tests/orders/test_broker_events.py does); the
cancel goes out as a signed `oms.cancel` on the account's command stream after the commit.
"""

from __future__ import annotations

from decimal import Decimal

import orjson
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.audit.models import AuditLog
from apps.common.redis import get_redis
from apps.events.models import OutboxEvent
from apps.events.prices import LastPrice, last_price_set
from apps.orders.models import Order, OrderEvent
from apps.orders.services.broker_events import BrokerEvent, Fill, broker_event_apply, broker_events_apply
from tests.orders.test_manage import place
from tests.risk.test_orders_integration import make_limit


def event(order, kind, **kw):
    return BrokerEvent(kind=kind, account_id=order.account_id, order_id=order.id, **kw)


def fill(exec_id, quantity, price="187.50"):
    return Fill(exec_id, Decimal(quantity), Decimal(price), Decimal("0.35"), "USD", timezone.now())


def working(member, account, **overrides):
    order = Order.objects.get(id=place(member, account, **overrides)["id"])
    return broker_event_apply(event=event(order, "accepted", broker_order_id="PERM-1"))


def commands(redis_client, account):
    return [orjson.loads(fields[b"envelope"])["kind"] for _, fields in redis_client.xrange(f"cmd.{account.id}")]


def breaches(order):
    return list(OutboxEvent.objects.filter(kind="risk.breached", aggregate_id=str(order.id)))


def test_residual_over_a_lowered_limit_is_cancelled_with_the_reason(
    manager, account, redis_client, django_capture_on_commit_callbacks
):
    limit = make_limit(manager, kind="MAX_POSITION_QTY", value="150")
    order = working(manager, account, quantity="100")
    manager.api.patch(f"/risk/limits/{limit['id']}", {"value": "80"})  # lowered while the order works
    redis_client.delete(f"cmd.{account.id}")
    with django_capture_on_commit_callbacks(execute=True):
        order = broker_event_apply(event=event(order, "execution", fill=fill("e1", "60")))
    assert (order.state, order.filled_quantity) == ("PENDING_CANCEL", Decimal(60))
    last = OrderEvent.objects.filter(order=order).order_by("-seq").first()
    assert last.actor_label == "risk-residual"
    assert last.detail["reason"] == ("residual of 40 cancelled by risk: Worst-case position 100 exceeds limit 80")
    assert (last.detail["gate"], last.detail["limit_id"], last.detail["limit_version"]) == (
        "MAX_POSITION_QTY",
        limit["id"],
        2,
    )
    (breach,) = breaches(order)
    assert breach.stream == "ev.risk"
    assert {k: breach.payload[k] for k in ("control", "gate", "value", "limit", "residual_quantity")} == {
        "control": "RESIDUAL_CANCEL",
        "gate": "MAX_POSITION_QTY",
        "value": "100",
        "limit": "80",
        "residual_quantity": "40",
    }
    assert AuditLog.objects.filter(action="risk.residual_cancel", resource_id=str(order.id)).count() == 1
    assert AuditLog.objects.filter(action="order.cancel", resource_id=str(order.id)).count() == 1
    assert commands(redis_client, account) == ["oms.cancel"]
    # The broker confirms: the order ends CANCELED with what it filled.
    order = broker_event_apply(event=event(order, "cancelled", reason="cancelled by request"))
    assert (order.state, order.filled_quantity) == ("CANCELED", Decimal(60))


def test_residual_within_limits_keeps_working(manager, account, redis_client, django_capture_on_commit_callbacks):
    make_limit(manager, kind="MAX_POSITION_QTY", value="150")
    order = working(manager, account, quantity="100")
    redis_client.delete(f"cmd.{account.id}")
    with django_capture_on_commit_callbacks(execute=True):
        order = broker_event_apply(event=event(order, "execution", fill=fill("e1", "60")))
    assert order.state == "PARTIALLY_FILLED"
    assert breaches(order) == []
    assert commands(redis_client, account) == []


def test_price_jump_puts_the_residual_over_the_gross_exposure_limit(manager, account):
    make_limit(manager, kind="MAX_GROSS_EXPOSURE", value="5")  # 5 % of the 1,000,000 default capital
    order = working(manager, account, quantity="100")  # 18,750: 1.9 %
    price = LastPrice(Decimal(1000), None, None, None, None, timezone.now(), "test")
    last_price_set(client=get_redis(), instrument_id=order.instrument_id, price=price)
    order = broker_event_apply(event=event(order, "execution", fill=fill("e1", "60")))
    assert order.state == "PENDING_CANCEL"
    (breach,) = breaches(order)
    assert breach.payload["gate"] == "MAX_GROSS_EXPOSURE"
    assert Decimal(breach.payload["value"]) > 5


def test_daily_loss_reached_cancels_a_residual_that_adds_to_the_position(manager, account):
    make_limit(manager, kind="DAILY_LOSS", value="1000")
    order = working(manager, account, quantity="100")
    price = LastPrice(Decimal(150), None, None, None, None, timezone.now(), "test")
    last_price_set(client=get_redis(), instrument_id=order.instrument_id, price=price)
    order = broker_event_apply(event=event(order, "execution", fill=fill("e1", "60")))  # 60 × -37.5 = -2,250
    assert order.state == "PENDING_CANCEL"
    assert breaches(order)[0].payload["gate"] == "DAILY_LOSS"


def test_a_full_fill_costs_no_risk_query(manager, account):
    make_limit(manager, kind="MAX_POSITION_QTY", value="150")
    order = working(manager, account, quantity="100")
    with CaptureQueriesContext(connection) as queries:
        order = broker_event_apply(event=event(order, "execution", fill=fill("e1", "100")))
    assert order.state == "FILLED"
    assert not [q["sql"] for q in queries.captured_queries if "risk_" in q["sql"]]


def test_batch_of_partial_fills_cancels_the_residual_once(manager, account):
    limit = make_limit(manager, kind="MAX_POSITION_QTY", value="150")
    order = working(manager, account, quantity="100")
    manager.api.patch(f"/risk/limits/{limit['id']}", {"value": "70"})
    applied = broker_events_apply(
        events=[event(order, "execution", fill=fill("e1", "30")), event(order, "execution", fill=fill("e2", "30"))]
    )
    assert applied == 2
    order.refresh_from_db()
    assert (order.state, order.filled_quantity) == ("PENDING_CANCEL", Decimal(60))
    assert len(breaches(order)) == 1


def test_without_residual_limits_a_partial_fill_costs_one_risk_query(manager, account):
    make_limit(manager, kind="MAX_ORDER_QTY", value="1000")  # an order-level limit: not re-run in flight
    order = working(manager, account, quantity="100")
    with CaptureQueriesContext(connection) as queries:
        order = broker_event_apply(event=event(order, "execution", fill=fill("e1", "60")))
    assert order.state == "PARTIALLY_FILLED"
    sqls = [q["sql"] for q in queries.captured_queries]
    assert len([sql for sql in sqls if "risk_" in sql]) == 1  # the EXISTS on the tenant's limits
    # No valuation of the account: the only position read is the fill's own (locked by portfolio).
    reads = [sql for sql in sqls if sql.startswith("SELECT") and "portfolio_position" in sql]
    assert [sql for sql in reads if "FOR UPDATE" not in sql] == []
