"""Periodic risk upkeep: automatic breaker resets and the daily-loss and reject-storm breakers."""

from __future__ import annotations

from datetime import timedelta

import structlog
from celery import shared_task
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from apps.brokers.models import BrokerAccount
from apps.common.context import Actor
from apps.events.models import OutboxEvent
from apps.risk.config import defaults
from apps.risk.models import AccountRisk, CircuitBreaker, RiskLimit
from apps.risk.services.controls import breaker_trip, breakers_auto_reset
from apps.risk.services.pretrade import account_marks

log = structlog.get_logger(__name__)
SYSTEM = Actor.system("risk-breakers")


def _trip(account: BrokerAccount, kind: str, reason: str, metrics: dict[str, str]) -> None:
    with transaction.atomic(durable=True):
        breaker_trip(
            tenant_id=account.tenant_id, kind=kind, account_id=account.id, reason=reason, metrics=metrics, actor=SYSTEM
        )


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90)
def breakers_evaluate_task() -> int:
    """Reset due breakers, then trip REJECT_STORM and DAILY_LOSS where their thresholds are crossed."""
    now = timezone.now()
    breakers_auto_reset(now=now, actor=SYSTEM)
    storm = defaults().breakers["REJECT_STORM"]
    since = now - timedelta(seconds=int(storm["window_seconds"]))
    rejects = (
        OutboxEvent.objects.filter(kind="order.rejected", created_at__gte=since)
        .values("payload__account_id")
        .annotate(count=Count("id"))
        .filter(count__gte=int(storm["threshold"]))
    )
    tripped = 0
    for row in rejects:
        account = BrokerAccount.objects.filter(id=row["payload__account_id"]).first()
        if account is not None:
            _trip(
                account,
                "REJECT_STORM",
                f"{row['count']} broker rejects in {storm['window_seconds']} s",
                {"rejects": str(row["count"]), "window_seconds": str(storm["window_seconds"])},
            )
            tripped += 1
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
                )
                tripped += 1
    open_count = CircuitBreaker.objects.filter(state=CircuitBreaker.State.OPEN).count()
    log.info("risk.breakers_evaluated", tripped=tripped, open=open_count)
    return tripped
