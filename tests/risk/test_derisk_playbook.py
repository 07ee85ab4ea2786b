"""The de-risk playbook with a set clock (persisted state, transitions audited and evented, the gate
reading the persisted state, reduction intents turned into orders) and the exposure feed."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import orjson
import pytest
import yaml
from django.conf import settings
from django.utils import timezone

from apps.audit.models import AuditLog
from apps.events.models import OutboxEvent
from apps.events.relay import relay_pending
from apps.events.services import outbox_emit
from apps.events.streams import POSITIONS
from apps.orders.models import Order
from apps.orders.services.intents import intent_execute, intents_consume
from apps.orders.services.risk import order_book
from apps.portfolio.models import Position
from apps.risk.config import defaults, parse
from apps.risk.exposure import Holding, by_bucket
from apps.risk.models import AccountRisk, ReductionIntent
from apps.risk.services.exposure_feed import EXPOSURE, exposure_publish, exposure_refresh
from apps.risk.services.playbook import INTENTS, playbook_account, playbook_run
from apps.risk.services.pretrade import OrderSpec, pretrade_evaluate
from tests.orders.conftest import make_account

NEW_YORK = ZoneInfo("America/New_York")


def et(hour: int, minute: int) -> datetime:
    """Monday 2 March 2026 (a NYSE session) on the New York clock."""
    return datetime(2026, 3, 2, hour, minute, tzinfo=NEW_YORK).astimezone(UTC)


def holding_book(tenant, account, instruments):
    """Put `account` on the NYSE calendar holding 8000 AAPL at 187.50: 150 % of its 1,000,000 equity."""
    AccountRisk.objects.create(account=account, tenant=tenant, calendar="XNYS", updated_at=timezone.now())
    now = timezone.now()
    Position.objects.create(
        tenant=tenant,
        account=account,
        instrument=instruments["AAPL"],
        symbol="AAPL",
        currency="USD",
        quantity=Decimal(8000),
        avg_cost=Decimal("187.50"),
        created_at=now,
        updated_at=now,
    )
    return account


@pytest.fixture
def book(tenant, account, instruments):
    """An account on the NYSE calendar holding 8000 AAPL at 187.50: 150 % of its 1,000,000 equity."""
    return holding_book(tenant, account, instruments)


def state_of(account) -> tuple[str, str | None]:
    row = AccountRisk.objects.get(account=account)
    return row.derisk_state, str(row.derisk_day) if row.derisk_day else None


def gate(tenant, account, instruments, side: str, now: datetime) -> dict:
    spec = OrderSpec(instruments["AAPL"], side, Decimal(100), "LMT", limit_price=Decimal("187.50"))
    evaluation = pretrade_evaluate(tenant=tenant, account=account, order=spec, book=order_book, lock=False, now=now)
    (check,) = [c for c in evaluation.checks if c["gate"] == "trading_state"]
    return check


def test_state_moves_by_the_exchange_clock_and_every_transition_is_audited_and_evented(tenant, book):
    assert playbook_account(account=book, now=et(16, 10)).moved is False
    assert state_of(book) == ("NORMAL", "2026-03-02")
    soft = playbook_account(account=book, now=et(16, 15))
    assert soft.moved and soft.state == "SOFT_DERISK" and soft.intents == ()
    assert playbook_account(account=book, now=et(16, 20)).moved is False
    hard = playbook_account(account=book, now=et(16, 28))
    assert hard.moved and hard.state == "HARD_DERISK"
    assert state_of(book) == ("HARD_DERISK", "2026-03-02")
    transitions = AuditLog.objects.filter(action="risk.derisk.transition").order_by("seq")
    assert [(a.before["derisk_state"], a.after["derisk_state"]) for a in transitions] == [
        ("NORMAL", "SOFT_DERISK"),
        ("SOFT_DERISK", "HARD_DERISK"),
    ]
    events = OutboxEvent.objects.filter(kind="risk.derisk.changed").order_by("seq")
    assert [(e.payload["from"], e.payload["to"]) for e in events] == [
        ("NORMAL", "SOFT_DERISK"),
        ("SOFT_DERISK", "HARD_DERISK"),
    ]
    assert events[0].payload["reason"] == "after 16:15 America/New_York"
    # The next local day starts NORMAL again.
    next_day = datetime(2026, 3, 3, 9, 0, tzinfo=NEW_YORK).astimezone(UTC)
    assert playbook_account(account=book, now=next_day).state == "NORMAL"


def test_the_gate_lets_only_reducing_orders_through_from_the_persisted_state(tenant, book, instruments):
    assert gate(tenant, book, instruments, "BUY", et(16, 0))["passed"]
    playbook_account(account=book, now=et(16, 16))
    buy, sell = gate(tenant, book, instruments, "BUY", et(16, 17)), gate(tenant, book, instruments, "SELL", et(16, 17))
    assert not buy["passed"] and "de-risk state SOFT_DERISK" in buy["detail"]
    assert sell["passed"]
    # The gate reads the persisted state: a state set further than the clock (by the task) holds.
    AccountRisk.objects.filter(account=book).update(derisk_state="HARD_DERISK")
    assert "de-risk state HARD_DERISK" in gate(tenant, book, instruments, "BUY", et(16, 17))["detail"]


def test_hard_derisk_produces_intents_that_the_order_core_places_once(tenant, book, manager, redis_client):
    hard = playbook_account(account=book, now=et(16, 29))
    (intent,) = hard.intents
    # One factor for every position: 8000 × (1 − 100/150) = 2666.67, rounded up to a whole share.
    assert (intent.side, intent.quantity, intent.status) == ("SELL", Decimal(2667), "PENDING")
    assert intent.inputs["gross_pct"] == "150.0000" and intent.inputs["gross_pct_after"] == "99.9938"
    assert intent.inputs["limit_price"] == "186.56"  # marketable: 0.5 % through 187.50, on the tick
    assert playbook_account(account=book, now=et(16, 30)).intents == ()  # one intent per day and instrument
    (shown,) = [a for a in manager.api.get("/risk/status").json_body["accounts"] if a["account_id"] == str(book.id)]
    assert [(i["id"], i["status"]) for i in shown["reduction_intents"]] == [(str(intent.id), "PENDING")]
    assert shown["derisk_since"] == et(16, 29).isoformat()
    assert ReductionIntent.objects.count() == 1
    assert AuditLog.objects.filter(action="risk.intent.create", resource_id=str(intent.id)).exists()

    relay_pending(client=redis_client)
    ((_, fields),) = redis_client.xrange(INTENTS)
    assert orjson.loads(fields[b"payload"])["id"] == str(intent.id)
    assert intents_consume(now=timezone.now(), client=redis_client) == 1
    intent.refresh_from_db()
    order = Order.objects.get()
    assert intent.status == "ORDERED" and intent.order_id == order.id
    assert (order.side, order.quantity, order.order_type, order.limit_price, order.outside_rth) == (
        "SELL",
        Decimal(2667),
        "LMT",
        Decimal("186.56"),
        True,
    )
    assert order.client_order_id == f"derisk-{intent.id.hex}"
    settle = AuditLog.objects.get(action="risk.intent.settle", resource_id=str(intent.id))
    assert settle.actor_label == "derisk-playbook"

    # Redelivered, or re-run after a crash before the intent was marked: still one order.
    assert intents_consume(now=timezone.now(), client=redis_client) == 0
    ReductionIntent.objects.filter(id=intent.id).update(status="PENDING", order_id=None)
    assert intent_execute(intent_id=intent.id).order_id == order.id
    assert Order.objects.count() == 1


def test_a_refused_intent_records_why(tenant, book, manager, redis_client):
    (intent,) = playbook_account(account=book, now=et(16, 29)).intents
    switch = manager.api.post("/risk/kill-switch", {"scope": "TENANT", "reason": "drill"})
    assert switch.status_code in (200, 201), switch.json_body
    settled = intent_execute(intent_id=intent.id)
    assert settled.status == "FAILED" and settled.error.startswith("KILL_SWITCH_ACTIVE")
    assert Order.objects.count() == 0


def test_always_open_accounts_have_no_playbook(account):
    assert playbook_account(account=account, now=et(16, 29)) is None
    assert not AccountRisk.objects.filter(account=account).exists()
    assert playbook_run(now=et(16, 29)) == []


def test_exposure_is_published_per_account_and_bucket_when_it_changes(tenant, book, manager, redis_client):
    now = timezone.now()
    payload = exposure_publish(account=book, now=now, client=redis_client)
    assert payload["current"] == "150" and payload["potential"] == "150"
    assert payload["buckets"]["LT"] == {
        "current": "150",
        "potential": "150",
        "current_notional": "1500000",
        "potential_notional": "1500000",
        "target": "100",
        "max": "130",
        "breach": True,
    }
    assert payload["buckets"]["MM"]["current"] == "0"
    assert exposure_publish(account=book, now=now, client=redis_client) is None  # unchanged: quiet
    event = OutboxEvent.objects.get(kind="risk.exposure")
    assert (event.stream, event.tenant_id, event.payload["account_id"]) == (EXPOSURE, tenant.id, str(book.id))

    status = manager.api.get("/risk/status").json_body
    (row,) = [a for a in status["accounts"] if a["account_id"] == str(book.id)]
    assert row["gross_exposure"]["buckets"]["LT"]["current"] == "150"


def test_exposure_refresh_follows_fills_at_once_and_prices_throttled(tenant, book, redis_client):
    assert exposure_refresh(now=timezone.now(), client=redis_client) == 1  # first valuation
    Position.objects.filter(account=book).update(quantity=Decimal(4000))
    assert exposure_refresh(now=timezone.now(), client=redis_client) == 0  # price path: throttled
    outbox_emit(
        tenant_id=tenant.id,
        stream=POSITIONS,
        kind="position.updated",
        aggregate_type="position",
        aggregate_id=book.id,
        payload={"account_id": str(book.id)},
    )
    relay_pending(client=redis_client)
    assert exposure_refresh(now=timezone.now(), client=redis_client) == 1  # a fill: at once
    latest = OutboxEvent.objects.filter(kind="risk.exposure").order_by("-seq").first()
    assert latest.payload["current"] == "75"


def test_tenant_overrides_of_the_playbook_and_the_buckets():
    raw = yaml.safe_load(settings.RISK_RULES_FILE.read_text())
    raw["tenants"] = {"acme": {"derisk": {"soft_at": "15:45"}, "buckets": {"symbols": {"spy": "MM"}}}}
    config = parse(raw)
    assert str(config.derisk_for("acme").soft_at) == "15:45:00"
    assert str(config.derisk_for("other").soft_at) == "16:15:00"
    holdings = {
        "1": Holding("1", "SPY", Decimal(100), Decimal(500)),
        "2": Holding("2", "AAPL", Decimal(-10), Decimal(200)),
    }
    split = by_bucket(holdings, [], buckets=config.buckets_for("acme"), account_code="X")
    assert (split["MM"].current, split["LT"].current) == (Decimal(50000), Decimal(2000))
    raw["tenants"] = {"acme": {"buckets": {"symbols": {"SPY": "XX"}}}}
    with pytest.raises(Exception, match="XX"):
        parse(raw)


# -- per-tenant playbook -------------------------------------------------------------------------


@pytest.fixture
def early_tenant_rules(settings, tmp_path, tenant):
    """Risk defaults where `tenant` de-risks earlier (15:45 / 15:55) and down to 80 % gross."""
    raw = yaml.safe_load(settings.RISK_RULES_FILE.read_text())
    raw["tenants"] = {tenant.slug: {"derisk": {"soft_at": "15:45", "hard_at": "15:55", "target_gross_pct": "80"}}}
    path = tmp_path / "risk_rules.yaml"
    path.write_text(yaml.safe_dump(raw))
    settings.RISK_RULES_FILE = path
    defaults.cache_clear()
    yield
    defaults.cache_clear()


def test_a_tenant_override_runs_its_own_playbook_while_another_tenant_keeps_the_defaults(
    early_tenant_rules, tenant, other_tenant, instruments
):
    early = holding_book(tenant, make_account(tenant, "EARLY1"), instruments)
    usual = holding_book(other_tenant, make_account(other_tenant, "USUAL1"), instruments)

    def states() -> dict[str, str]:
        return {code: state_of(account)[0] for code, account in (("early", early), ("usual", usual))}

    playbook_run(now=et(15, 40))
    assert states() == {"early": "NORMAL", "usual": "NORMAL"}
    playbook_run(now=et(15, 46))
    assert states() == {"early": "SOFT_DERISK", "usual": "NORMAL"}
    outcomes = {outcome.account_id: outcome for outcome in playbook_run(now=et(15, 56))}
    assert states() == {"early": "HARD_DERISK", "usual": "NORMAL"}
    # Down to the tenant's 80 %: 8000 × (1 − 80/150) = 3733.33, rounded up to a whole share.
    (intent,) = outcomes[str(early.id)].intents
    assert (intent.side, intent.quantity, intent.inputs["target_gross_pct"]) == ("SELL", Decimal(3734), "80")
    assert outcomes[str(usual.id)].intents == ()
    soft = OutboxEvent.objects.get(kind="risk.derisk.changed", tenant_id=tenant.id, payload__to="SOFT_DERISK")
    assert soft.payload["reason"] == "after 15:45 America/New_York"

    # The other tenant follows the defaults (16:15 / 16:28, down to 100 %), with its own audit trail.
    playbook_run(now=et(16, 16))
    assert states() == {"early": "HARD_DERISK", "usual": "SOFT_DERISK"}
    outcomes = {outcome.account_id: outcome for outcome in playbook_run(now=et(16, 29))}
    (usual_intent,) = outcomes[str(usual.id)].intents
    assert (usual_intent.side, usual_intent.quantity) == ("SELL", Decimal(2667))
    assert outcomes[str(early.id)].intents == ()  # one intent per day and instrument
    assert ReductionIntent.objects.filter(tenant=other_tenant).count() == 1
    transitions = {
        owner.id: [
            (a.before["derisk_state"], a.after["derisk_state"])
            for a in AuditLog.objects.filter(action="risk.derisk.transition", tenant_id=owner.id).order_by("seq")
        ]
        for owner in (tenant, other_tenant)
    }
    expected = [("NORMAL", "SOFT_DERISK"), ("SOFT_DERISK", "HARD_DERISK")]
    assert transitions == {tenant.id: expected, other_tenant.id: expected}
