"""Calendar-driven order handling: held outside the session, released at the open, refused when the
tenant says so, DAY / GTD expiry, the on-close cutoff, and the always-open default."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from django.db import transaction
from django.utils import timezone

from apps.audit.models import AuditLog
from apps.brokers.models import AccountMode, Broker, BrokerAccount
from apps.brokers.services import Connection, broker_account_create
from apps.common.errors import ComplianceBlocked
from apps.compliance import calendars
from apps.events.models import OutboxEvent
from apps.orders.models import Order, OrderEvent
from apps.orders.services.risk import order_book
from apps.orders.services.sessions import held_release, orders_expire
from apps.orders.state import OrderState
from apps.risk import sessions
from apps.risk.models import AccountRisk
from apps.risk.services.pretrade import OrderSpec, pretrade_evaluate
from tests.orders.conftest import SYSTEM, order_body

# Tokyo and New York sessions never overlap: at any moment one of them is closed.
CANDIDATES = ("XTKS", "XNYS")


def closed_calendar() -> str:
    now = timezone.now()
    return next(name for name in CANDIDATES if not calendars.facts(name, now).is_open)


def follow(manager, account, calendar: str, capture) -> None:
    with capture(execute=True):
        response = manager.api.patch(f"/risk/accounts/{account.id}", {"calendar": calendar})
    assert response.status_code == 200, response.json_body


def commands(redis_client, account) -> list[tuple[str, list[str]]]:
    """(kind, order ids) of every command sent to the account's connector."""
    sent = []
    for _, fields in redis_client.xrange(f"cmd.{account.id}"):
        envelope = orjson.loads(fields[b"envelope"])
        sent.append((envelope["kind"], [order["order_id"] for order in envelope["payload"]["orders"]]))
    return sent


def place(member, account, capture, **overrides):
    with capture(execute=True):
        response = member.api.post("/orders", order_body(account, **overrides))
    assert response.status_code == 201, response.json_body
    return response.json_body


def test_an_order_outside_the_session_is_held_then_routed_at_the_open(
    manager, granted_trader, account, redis_client, django_capture_on_commit_callbacks
):
    name = closed_calendar()
    follow(manager, account, name, django_capture_on_commit_callbacks)
    held = place(granted_trader, account, django_capture_on_commit_callbacks)
    assert held["state"] == "NEW"
    assert commands(redis_client, account) == []  # nothing sent while the market is closed

    # Still closed: nothing is released.
    assert held_release(now=timezone.now()) == 0
    # One minute after the next open the held order goes to the connector.
    opens = calendars.facts(name, timezone.now()).next_open
    assert held_release(now=opens + timedelta(minutes=1)) == 1
    assert commands(redis_client, account) == [("oms.submit", [held["id"]])]
    assert Order.objects.get(id=held["id"]).state == OrderState.NEW  # until the broker acknowledges


def test_outside_rth_routes_at_once(manager, granted_trader, account, redis_client, django_capture_on_commit_callbacks):
    follow(manager, account, closed_calendar(), django_capture_on_commit_callbacks)
    order = place(granted_trader, account, django_capture_on_commit_callbacks, outside_rth=True)
    assert commands(redis_client, account) == [("oms.submit", [order["id"]])]


def test_a_tenant_may_refuse_orders_for_a_closed_market(
    admin, manager, granted_trader, account, django_capture_on_commit_callbacks
):
    follow(manager, account, closed_calendar(), django_capture_on_commit_callbacks)
    rule = admin.api.post("/compliance/rules", {"kind": "TRADING_HOURS", "params": {"closed_market": "REFUSE"}})
    assert rule.status_code == 201, rule.json_body
    response = granted_trader.api.post("/orders", order_body(account))
    assert response.status_code == 422
    body = response.json_body
    assert body["code"] == "COMPLIANCE_BLOCKED"
    assert body["details"]["rule"] == "trading_hours"
    assert body["details"]["rule_id"] == rule.json_body["id"]
    assert Order.objects.count() == 0
    # outside_rth still passes.
    assert granted_trader.api.post("/orders", order_body(account, outside_rth=True)).status_code == 201


def test_paper_and_simulator_accounts_are_always_open(
    tenant, account, granted_trader, redis_client, django_capture_on_commit_callbacks
):
    assert sessions.calendar_of(account.id, fresh=True) == calendars.ALWAYS_OPEN
    simulator = broker_account_create(
        tenant=tenant,
        actor=SYSTEM,
        broker=Broker.IB,
        account_code="DU1234567",
        mode=AccountMode.PAPER,
        connection=Connection("127.0.0.1", 4002, 9),
    )
    gateway = broker_account_create(
        tenant=tenant,
        actor=SYSTEM,
        broker=Broker.IB,
        account_code="U7654321",
        mode=AccountMode.LIVE,
        connection=Connection("gateway.internal", 4001, 9),
    )
    assert sessions.calendar_of(simulator.id, fresh=True) == calendars.ALWAYS_OPEN
    assert sessions.calendar_of(gateway.id, fresh=True) == "XNYS"
    # The paper account routes at any hour.
    order = place(granted_trader, account, django_capture_on_commit_callbacks)
    assert commands(redis_client, account) == [("oms.submit", [order["id"]])]


def test_day_orders_expire_at_the_session_close(
    manager, granted_trader, account, redis_client, django_capture_on_commit_callbacks
):
    follow(manager, account, "XNYS", django_capture_on_commit_callbacks)
    new = place(granted_trader, account, django_capture_on_commit_callbacks, outside_rth=True)
    working = place(granted_trader, account, django_capture_on_commit_callbacks, outside_rth=True)
    gtc = place(granted_trader, account, django_capture_on_commit_callbacks, outside_rth=True, time_in_force="GTC")
    Order.objects.filter(id=working["id"]).update(state=OrderState.ROUTED.value)
    now = timezone.now()
    assert orders_expire(now=now) == 0  # the session they belong to has not closed yet
    closes = calendars.calendar_of("XNYS").next_close(now).to_pydatetime()
    redis_client.delete(f"cmd.{account.id}")
    with django_capture_on_commit_callbacks(execute=True):
        assert orders_expire(now=closes + timedelta(minutes=1)) == 2
    assert Order.objects.get(id=new["id"]).state == OrderState.EXPIRED
    assert Order.objects.get(id=working["id"]).state == OrderState.PENDING_CANCEL  # cancelled at the broker
    assert Order.objects.get(id=gtc["id"]).state == OrderState.NEW
    event = OrderEvent.objects.filter(order_id=new["id"], to_state="EXPIRED").get()
    assert event.detail["reason"].startswith("DAY order expired at the XNYS session close")
    assert OutboxEvent.objects.filter(kind="order.expired", aggregate_id=new["id"]).exists()
    audits = AuditLog.objects.filter(action="order.expire").values_list("resource_id", flat=True)
    assert set(audits) == {new["id"], working["id"]}
    assert sorted(commands(redis_client, account)) == sorted(
        [("oms.cancel", [new["id"]]), ("oms.cancel", [working["id"]])]
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert orders_expire(now=closes + timedelta(minutes=2)) == 0  # idempotent


def test_gtd_orders_expire_at_good_till(granted_trader, account, django_capture_on_commit_callbacks):
    good_till = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    order = place(
        granted_trader,
        account,
        django_capture_on_commit_callbacks,
        time_in_force="GTD",
        good_till=good_till.isoformat(),
    )
    assert orders_expire(now=good_till - timedelta(seconds=1)) == 0
    with django_capture_on_commit_callbacks(execute=True):
        assert orders_expire(now=good_till) == 1
    row = Order.objects.get(id=order["id"])
    assert row.state == OrderState.EXPIRED
    assert row.events.filter(to_state="EXPIRED").get().detail["reason"].startswith("GTD order expired at")


def test_on_close_orders_are_refused_after_the_cutoff(tenant, account, instruments):
    AccountRisk.objects.update_or_create(
        account=account, defaults={"tenant": tenant, "calendar": "XNYS", "updated_at": timezone.now()}
    )
    # A Monday at 15:55 New York time (20:55 UTC in November).
    late = datetime(2025, 11, 24, 20, 55, tzinfo=UTC)
    spec = OrderSpec(instruments["AAPL"], "BUY", Decimal(10), "MOC")
    preview = pretrade_evaluate(tenant=tenant, account=account, order=spec, book=order_book, lock=False, now=late)
    (cutoff,) = [c for c in preview.checks if c["gate"] == "on_close_cutoff"]
    assert not cutoff["passed"] and "15:50 America/New_York" in cutoff["detail"]
    early = pretrade_evaluate(
        tenant=tenant, account=account, order=spec, book=order_book, lock=False, now=late - timedelta(minutes=10)
    )
    assert [c["passed"] for c in early.checks if c["gate"] == "on_close_cutoff"] == [True]
    with pytest.raises(ComplianceBlocked) as refused, transaction.atomic():
        pretrade_evaluate(tenant=tenant, account=account, order=spec, book=order_book, lock=True, now=late)
    assert refused.value.details["rule"] == "on_close_cutoff"
    assert BrokerAccount.objects.filter(id=account.id).exists()
