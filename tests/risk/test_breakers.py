"""Circuit breakers that trip by themselves and say why: slow acknowledgements, a stale market
data feed, a reconciliation break; automatic reset after the cool-off, manual reset, `/risk/status`."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import yaml
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from apps.audit.models import AuditLog
from apps.brokers.ib.models import ReconciliationDrift, ReconciliationRun, RunStatus, RunTrigger
from apps.common.redis import get_redis
from apps.events.models import OutboxEvent
from apps.events.prices import LastPrice, last_price_set
from apps.orders.models import Order
from apps.orders.services.broker_events import BrokerEvent, broker_event_apply
from apps.risk.config import defaults, parse
from apps.risk.models import CircuitBreaker
from apps.risk.services.breakers import SLOW_ACKS_KEY, breaker_rules
from apps.risk.tasks import breakers_evaluate
from tests.orders.conftest import order_body
from tests.orders.test_manage import place


def ack(order):
    return broker_event_apply(event=BrokerEvent(kind="accepted", account_id=order.account_id, order_id=order.id))


def placed(member, account, *, age_seconds=0, **overrides):
    order = Order.objects.get(id=place(member, account, **overrides)["id"])
    if age_seconds:
        Order.objects.filter(id=order.id).update(created_at=timezone.now() - timedelta(seconds=age_seconds))
        order.refresh_from_db()
    return order


def breaker(account, kind):
    return CircuitBreaker.objects.filter(account=account, kind=kind).first()


def tick(instrument_id, *, age_seconds=0, at=None, price="187.50"):
    at = at or timezone.now() - timedelta(seconds=age_seconds)
    last_price_set(
        client=get_redis(),
        instrument_id=instrument_id,
        price=LastPrice(Decimal(price), None, None, None, None, at, "test"),
    )


def breached_events(kind):
    return [e for e in OutboxEvent.objects.filter(kind="risk.breached") if e.payload.get("kind") == kind]


# -- ACK_LATENCY ---------------------------------------------------------------------------------


def test_slow_acknowledgements_trip_ack_latency_and_halt_new_orders(
    manager, granted_trader, account, redis_client, django_capture_on_commit_callbacks
):
    fast = placed(manager, account)
    with django_capture_on_commit_callbacks(execute=True):
        ack(fast)
    assert not redis_client.exists(f"{SLOW_ACKS_KEY}{account.id}")  # a fast ack touches no Redis key
    slow = [placed(manager, account, age_seconds=10) for _ in range(5)]
    for order in slow[:4]:
        with django_capture_on_commit_callbacks(execute=True):
            ack(order)
    assert breaker(account, "ACK_LATENCY") is None  # 4 slow acks: below min_samples (5)
    with django_capture_on_commit_callbacks(execute=True):
        ack(slow[4])
    tripped = breaker(account, "ACK_LATENCY")
    assert (tripped.state, tripped.action, tripped.manual) == ("OPEN", "HALTED", False)
    assert tripped.reason.startswith("5 broker acknowledgements slower than 5000 ms in 120 s (last ")
    assert tripped.metrics["slow_acks"] == 5
    assert sorted(tripped.metrics["orders"]) == sorted(str(o.id) for o in slow)
    assert [e.payload["control"] for e in breached_events("ACK_LATENCY")] == ["CIRCUIT_BREAKER"]
    assert AuditLog.objects.filter(action="risk.breaker.trip", resource_id=str(tripped.id)).count() == 1
    response = granted_trader.api.post("/orders", order_body(account))
    assert response.status_code == 423
    assert "circuit breaker ACK_LATENCY" in response.json_body["message"]
    # Automatic reset once the cool-off (300 s) has passed without new slow acks.
    breakers_evaluate(now=timezone.now() + timedelta(seconds=301))
    tripped.refresh_from_db()
    assert (tripped.state, tripped.reason) == ("CLOSED", "automatic reset")
    assert AuditLog.objects.filter(action="risk.breaker.reset", resource_id=str(tripped.id)).count() == 1
    assert granted_trader.api.post("/orders", order_body(account)).status_code == 201


# -- STALE_MARKET_DATA ---------------------------------------------------------------------------


def test_stale_feed_trips_reducing_and_resets_after_the_cool_off_once_fresh(manager, granted_trader, account):
    order = placed(manager, account)
    tick(order.instrument_id, age_seconds=30)
    assert breakers_evaluate(now=timezone.now()) == 0  # 30 s old: within max_age (120 s)
    tick(order.instrument_id, age_seconds=200)
    now = timezone.now()
    assert breakers_evaluate(now=now) == 1
    stale = breaker(account, "STALE_MARKET_DATA")
    assert (stale.state, stale.action) == ("OPEN", "REDUCING")
    assert stale.reason == "no tick for 200 s on 1 instrument(s) with working orders (max age 120 s)"
    assert stale.metrics["stale_seconds"] == {str(order.instrument_id): 200}
    assert [e.payload["reason"] for e in breached_events("STALE_MARKET_DATA")] == [stale.reason]
    assert AuditLog.objects.filter(action="risk.breaker.trip", resource_id=str(stale.id)).count() == 1
    # REDUCING: an order that adds to the position is refused, /risk/status says why.
    response = granted_trader.api.post("/orders", order_body(account))
    assert response.status_code == 422
    assert "circuit breaker STALE_MARKET_DATA open" in response.json_body["message"]
    status = manager.api.get("/risk/status").json_body
    (shown,) = status["breakers"]
    assert (shown["kind"], shown["state"], shown["reason"]) == ("STALE_MARKET_DATA", "OPEN", stale.reason)
    assert status["accounts"][0]["trading_state"] == "REDUCING"
    # Still stale 61 s later: the cool-off moves out instead of a reset.
    later = now + timedelta(seconds=61)
    breakers_evaluate(now=later)
    stale.refresh_from_db()
    assert (stale.state, stale.trips, stale.reset_at) == ("OPEN", 1, later + timedelta(seconds=60))
    # A fresh tick: the condition cleared; the breaker closes once the cool-off has passed.
    tick(order.instrument_id, at=later + timedelta(seconds=30))
    breakers_evaluate(now=later + timedelta(seconds=30))
    stale.refresh_from_db()
    assert stale.state == "OPEN"
    breakers_evaluate(now=later + timedelta(seconds=61))
    stale.refresh_from_db()
    assert stale.state == "CLOSED"
    assert AuditLog.objects.filter(action="risk.breaker.reset", resource_id=str(stale.id)).count() == 1
    assert OutboxEvent.objects.filter(kind="risk.breaker.reset", aggregate_id=str(stale.id)).count() == 1


def test_no_working_orders_or_no_cached_price_does_not_trip(manager, account):
    order = placed(manager, account)
    assert breakers_evaluate(now=timezone.now()) == 0  # never ticked: nothing to age
    tick(order.instrument_id, age_seconds=500)
    manager.api.post(f"/orders/{order.id}/cancel")  # NEW: cancelled at once
    assert breakers_evaluate(now=timezone.now()) == 0
    assert breaker(account, "STALE_MARKET_DATA") is None


# -- RECONCILIATION_BREAK ------------------------------------------------------------------------


def run(account, *, finished_ago, drifts=()):
    finished = timezone.now() - timedelta(seconds=finished_ago)
    row = ReconciliationRun.objects.create(
        tenant_id=account.tenant_id,
        account=account,
        trigger=RunTrigger.SCHEDULE,
        status=RunStatus.COMPLETED,
        started_at=finished,
        finished_at=finished,
    )
    for kind, action in drifts:
        ReconciliationDrift.objects.create(run=row, kind=kind, action=action, resolution="test")
    return row


def test_unresolved_reconciliation_drifts_trip_the_break_until_a_clean_run(manager, granted_trader, account):
    run(account, finished_ago=600, drifts=[("POSITION_BREAK", "FLAG")])
    run(account, finished_ago=300, drifts=[("MISSING_FILL", "PUBLISH_FILL")])  # resolved by the run itself
    assert breakers_evaluate(now=timezone.now()) == 0  # the latest run resolved everything
    broken = run(account, finished_ago=60, drifts=[("POSITION_BREAK", "FLAG"), ("UNKNOWN_ORDER_AT_IB", "FLAG")])
    assert breakers_evaluate(now=timezone.now()) == 1
    tripped = breaker(account, "RECONCILIATION_BREAK")
    assert (tripped.state, tripped.action) == ("OPEN", "HALTED")
    assert tripped.reason == (
        f"reconciliation run {broken.id} left 2 unresolved drift(s): 1 POSITION_BREAK, 1 UNKNOWN_ORDER_AT_IB"
    )
    assert tripped.metrics["unresolved"] == {"POSITION_BREAK": 1, "UNKNOWN_ORDER_AT_IB": 1}
    assert [e.payload["action"] for e in breached_events("RECONCILIATION_BREAK")] == ["HALTED"]
    assert AuditLog.objects.filter(action="risk.breaker.trip", resource_id=str(tripped.id)).count() == 1
    assert granted_trader.api.post("/orders", order_body(account)).status_code == 423
    # A risk manager resets it by hand (409 once closed).
    reset = manager.api.post(f"/risk/breakers/{tripped.id}/reset")
    assert (reset.status_code, reset.json_body["state"]) == (200, "CLOSED")
    assert manager.api.post(f"/risk/breakers/{tripped.id}/reset").status_code == 409
    # The break persists: the next evaluation trips it again; a clean run clears it after the cool-off.
    breakers_evaluate(now=timezone.now())
    tripped.refresh_from_db()
    assert (tripped.state, tripped.trips) == ("OPEN", 2)
    run(account, finished_ago=0)
    breakers_evaluate(now=timezone.now() + timedelta(seconds=301))
    tripped.refresh_from_db()
    assert tripped.state == "CLOSED"


def test_status_lists_every_breaker_rule(manager, tenant):
    rules = {rule["kind"]: rule for rule in manager.api.get("/risk/status").json_body["breaker_rules"]}
    assert set(rules) == {"REJECT_STORM", "DAILY_LOSS", "ACK_LATENCY", "STALE_MARKET_DATA", "RECONCILIATION_BREAK"}
    assert rules["ACK_LATENCY"] == {
        "kind": "ACK_LATENCY",
        "action": "HALTED",
        "reset": "AUTO",
        "reset_seconds": 300,
        "thresholds": {"threshold_ms": 5000, "window_seconds": 120, "min_samples": 5},
    }
    assert rules == {rule["kind"]: rule for rule in breaker_rules(tenant_id=tenant.id)}


# -- per-tenant thresholds -----------------------------------------------------------------------


@pytest.fixture
def tenant_breakers(settings, tmp_path, tenant):
    """Risk defaults where this tenant trips ACK_LATENCY after 2 acks slower than 1 s."""
    raw = yaml.safe_load(settings.RISK_RULES_FILE.read_text())
    raw["tenants"] = {tenant.slug: {"breakers": {"ACK_LATENCY": {"threshold_ms": 1000, "min_samples": 2}}}}
    path = tmp_path / "defaults.yaml"
    path.write_text(yaml.safe_dump(raw))
    settings.RISK_RULES_FILE = path
    defaults.cache_clear()
    yield
    defaults.cache_clear()


def test_a_tenant_overrides_breaker_thresholds(tenant_breakers, manager, account, django_capture_on_commit_callbacks):
    rules = {rule["kind"]: rule for rule in manager.api.get("/risk/status").json_body["breaker_rules"]}
    assert rules["ACK_LATENCY"]["thresholds"] == {"threshold_ms": 1000, "window_seconds": 120, "min_samples": 2}
    assert rules["REJECT_STORM"]["thresholds"] == {"threshold": 10, "window_seconds": 60}  # not overridden
    for order in [placed(manager, account, age_seconds=2) for _ in range(2)]:
        with django_capture_on_commit_callbacks(execute=True):
            ack(order)
    tripped = breaker(account, "ACK_LATENCY")
    assert tripped.state == "OPEN"
    assert tripped.reason.startswith("2 broker acknowledgements slower than 1000 ms in 120 s")


def test_tenant_breaker_overrides_are_validated(settings):
    raw = yaml.safe_load(settings.RISK_RULES_FILE.read_text())
    raw["tenants"] = {"acme": {"breakers": {"ACK_LATENCY": {"reset": "SOMETIMES"}}}}
    with pytest.raises(ImproperlyConfigured, match="ACK_LATENCY needs reset AUTO"):
        parse(raw)
    raw["tenants"] = {"acme": {"breakers": {"SLOW_COFFEE": {"threshold": 1}}}}
    with pytest.raises(ImproperlyConfigured, match="SLOW_COFFEE"):
        parse(raw)
