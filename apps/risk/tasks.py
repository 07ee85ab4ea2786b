"""Periodic risk upkeep: the breakers that trip by themselves, then the automatic resets."""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from celery import shared_task
from django.db.models import Count
from django.utils import timezone

from apps.brokers.models import BrokerAccount
from apps.events.models import OutboxEvent
from apps.risk.config import defaults
from apps.risk.models import AccountRisk, CircuitBreaker, RiskLimit
from apps.risk.services.breakers import SYSTEM, reconciliation_break_evaluate, stale_market_data_evaluate, trip
from apps.risk.services.controls import breaker_settings, breakers_auto_reset
from apps.risk.services.exposure_feed import exposure_refresh
from apps.risk.services.playbook import playbook_run
from apps.risk.services.pretrade import account_marks

log = structlog.get_logger(__name__)


def _trip(account: BrokerAccount, kind: str, reason: str, metrics: dict[str, str], now: datetime) -> None:
    trip(tenant_id=account.tenant_id, account_id=account.id, kind=kind, reason=reason, metrics=metrics, now=now)


def _reject_storms(now: datetime) -> int:
    """REJECT_STORM: accounts with `threshold` broker rejects in `window_seconds` (their tenant's)."""
    config = defaults()
    variants = [config.breakers, *(t.breakers for t in (config.tenants or {}).values() if t.breakers)]
    tripped = 0
    for window in sorted({int(v["REJECT_STORM"]["window_seconds"]) for v in variants}):
        lowest = min(int(v["REJECT_STORM"]["threshold"]) for v in variants)
        rejects = (
            OutboxEvent.objects.filter(kind="order.rejected", created_at__gte=now - timedelta(seconds=window))
            .values("payload__account_id")
            .annotate(count=Count("id"))
            .filter(count__gte=lowest)
        )
        for row in rejects:
            account = BrokerAccount.objects.filter(id=row["payload__account_id"]).first()
            if account is None:
                continue
            storm = breaker_settings(tenant_id=account.tenant_id)["REJECT_STORM"]
            if int(storm["window_seconds"]) != window or row["count"] < int(storm["threshold"]):
                continue
            _trip(
                account,
                "REJECT_STORM",
                f"{row['count']} broker rejects in {window} s (threshold {storm['threshold']})",
                {"rejects": str(row["count"]), "window_seconds": str(window), "threshold": str(storm["threshold"])},
                now,
            )
            tripped += 1
    return tripped


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90)
def breakers_evaluate_task() -> int:
    """Trip the breakers whose conditions hold, then reset the automatic ones that are due."""
    return breakers_evaluate(now=timezone.now())


def breakers_evaluate(*, now: datetime) -> int:
    """Trip (or keep open, pushing their automatic reset out) REJECT_STORM, DAILY_LOSS,
    STALE_MARKET_DATA and RECONCILIATION_BREAK where their conditions hold, then close the
    automatic breakers whose cool-off has passed; return how many breakers tripped or stayed
    tripped. Conditions first: a breaker whose condition persists is never reset and re-tripped."""
    tripped = _reject_storms(now)
    for limit in RiskLimit.objects.filter(kind="DAILY_LOSS", enabled=True).select_related("tenant"):
        accounts = BrokerAccount.objects.filter(tenant_id=limit.tenant_id)
        if limit.scope == "ACCOUNT":
            accounts = accounts.filter(id=limit.scope_id)
        elif limit.scope != "TENANT":
            continue
        for account in accounts:
            marks = account_marks(account=account, row=AccountRisk.objects.filter(account=account).first(), now=now)
            if -marks.day_pnl >= limit.value:
                _trip(
                    account,
                    "DAILY_LOSS",
                    f"today's loss {-marks.day_pnl} reached limit {limit.value}",
                    {"day_pnl": str(marks.day_pnl), "limit": str(limit.value), "limit_id": str(limit.id)},
                    now,
                )
                tripped += 1
    tripped += stale_market_data_evaluate(now=now)
    tripped += reconciliation_break_evaluate(now=now)
    reset = breakers_auto_reset(now=now, actor=SYSTEM)
    open_count = CircuitBreaker.objects.filter(state=CircuitBreaker.State.OPEN).count()
    log.info("risk.breakers_evaluated", tripped=tripped, reset=reset, open=open_count)
    return tripped


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90)
def derisk_playbook_task() -> int:
    """Move every account's de-risk state by its exchange clock; in HARD_DERISK record reduction intents."""
    outcomes = playbook_run(now=timezone.now())
    return sum(len(outcome.intents) for outcome in outcomes)


@shared_task(acks_late=True, soft_time_limit=30, time_limit=45)
def exposure_refresh_task() -> int:
    """Publish `ev.exposure` for accounts with new fills and, throttled, for every account holding a position."""
    return exposure_refresh(now=timezone.now())
