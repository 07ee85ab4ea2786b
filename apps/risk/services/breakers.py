"""Circuit breakers that trip by themselves: slow broker acknowledgements, a stale market data
feed, a reconciliation break (the reject storm and the daily loss are evaluated in `tasks`).

Each breaker is per account; its thresholds, action (HALTED / REDUCING) and reset (AUTO after
`reset_seconds`, or MANUAL) come from `config/risk_rules.yaml` (`breakers`). A condition that
persists re-trips an open breaker, which pushes its automatic reset out: an AUTO breaker closes
`reset_seconds` after the condition was last seen (the cool-off). Tripping and resetting are
audited and announced on `ev.risk` (`risk.breached`, `risk.breaker.reset`) by `controls`.

- ACK_LATENCY: the time from routing an order to the broker's acknowledgement, measured when the
  applier applies the acknowledgement (`ack_latency_observe`). Only slow ones touch Redis: one
  sorted set per account of the slow acknowledgements of the last `window_seconds`; at
  `min_samples` of them the breaker trips, after the applier's transaction commits.
- STALE_MARKET_DATA: an instrument with working orders whose last cached tick (apps.events.prices)
  is older than `max_age_seconds`, checked by the periodic task (`stale_market_data_evaluate`).
  An instrument with no cached price at all is listed in the metrics but does not trip: there is
  no tick to age (the PRICE_BAND gate already fails closed without a last price).
- RECONCILIATION_BREAK: the account's latest completed reconciliation run left drifts it could
  not resolve (action FLAG, such as POSITION_BREAK), checked by the periodic task
  (`reconciliation_break_evaluate`); a later clean run clears the condition.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from functools import partial
from typing import Any
from uuid import UUID

import redis
import structlog
from django.db import transaction
from django.utils import timezone
from prometheus_client import Histogram

from apps.brokers.ib.models import ReconciliationDrift, ReconciliationRun, RunStatus
from apps.brokers.models import BrokerAccount
from apps.common.context import Actor
from apps.common.redis import get_redis
from apps.events.prices import last_prices
from apps.risk.book import book_for
from apps.risk.config import defaults
from apps.risk.models import CircuitBreaker
from apps.risk.services.controls import breaker_settings, breaker_trip
from apps.risk.services.pretrade import BookQuery

log = structlog.get_logger(__name__)
SYSTEM = Actor.system("risk-breakers")
ACK_LATENCY = Histogram(
    "oms_broker_ack_latency_seconds",
    "Time from routing an order to the broker's acknowledgement, when the acknowledgement is applied",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
SLOW_ACKS_KEY = "risk:slow-acks:"
UNRESOLVED_ACTION = "FLAG"  # apps.brokers.ib.reconcile.Action.FLAG: a drift the run could not resolve


def trip(
    *, tenant_id: UUID, account_id: UUID, kind: str, reason: str, metrics: dict[str, Any], now: datetime | None = None
) -> None:
    """Trip (or refresh) one account's breaker in its own transaction."""
    with transaction.atomic(durable=True):
        breaker_trip(
            tenant_id=tenant_id,
            kind=kind,
            account_id=account_id,
            reason=reason,
            metrics=metrics,
            actor=SYSTEM,
            now=now,
        )


# -- ACK_LATENCY ---------------------------------------------------------------------------------


def _lowest_ack_threshold_ms() -> float:
    config = defaults()
    variants = [config.breakers, *(t.breakers for t in (config.tenants or {}).values() if t.breakers)]
    return min(float(v["ACK_LATENCY"]["threshold_ms"]) for v in variants)


def ack_latency_observe(
    *, order_id: UUID, account_id: UUID, tenant_id: UUID, sent_at: datetime, acked_at: datetime | None = None
) -> float:
    """Record one acknowledgement's latency (call where the applier applies it); return it in seconds.

    Cheap when the acknowledgement is fast: a histogram observation. A slow one is added to the
    account's window in Redis, and when the window holds `min_samples` slow ones the breaker trips
    once the caller's transaction commits (never inside it: the applier holds order locks).
    """
    acked_at = acked_at or timezone.now()
    latency = max(0.0, (acked_at - sent_at).total_seconds())
    ACK_LATENCY.observe(latency)
    if latency * 1000 < _lowest_ack_threshold_ms():
        return latency  # fast for every tenant: no query, no Redis
    config = breaker_settings(tenant_id=tenant_id)["ACK_LATENCY"]
    if latency * 1000 < float(config["threshold_ms"]):
        return latency
    window = int(config["window_seconds"])
    key = f"{SLOW_ACKS_KEY}{account_id}"
    at = acked_at.timestamp()
    try:
        pipe = get_redis().pipeline(transaction=True)
        pipe.zadd(key, {str(order_id): at})
        pipe.zremrangebyscore(key, "-inf", at - window)
        pipe.zcard(key)
        pipe.zrange(key, 0, -1, withscores=True)
        pipe.expire(key, window * 2)
        _, _, count, rows, _ = pipe.execute()
    except redis.RedisError as exc:
        log.warning("risk.ack_latency_unrecorded", account_id=str(account_id), error=str(exc))
        return latency
    if count >= int(config["min_samples"]):
        metrics = {
            "slow_acks": count,
            "window_seconds": window,
            "threshold_ms": int(config["threshold_ms"]),
            "last_latency_ms": round(latency * 1000),
            "orders": [member.decode() if isinstance(member, bytes) else str(member) for member, _ in rows][-10:],
        }
        reason = (
            f"{count} broker acknowledgements slower than {config['threshold_ms']} ms in {window} s "
            f"(last {round(latency * 1000)} ms)"
        )
        transaction.on_commit(
            partial(
                trip, tenant_id=tenant_id, account_id=account_id, kind="ACK_LATENCY", reason=reason, metrics=metrics
            ),
            robust=True,
        )
    return latency


# -- STALE_MARKET_DATA ---------------------------------------------------------------------------


def stale_market_data_evaluate(*, now: datetime | None = None) -> int:
    """Trip STALE_MARKET_DATA on every account with a working order on an instrument whose last
    tick is older than `max_age_seconds`; return how many breakers tripped or stayed tripped."""
    now = now or timezone.now()
    tripped = 0
    client = get_redis()
    for account in BrokerAccount.objects.only("id", "tenant_id", "account_code"):
        book, known = book_for(BookQuery(account.id, None, since=now, tenant_id=account.tenant_id))
        instruments = sorted({str(o.instrument_id) for o in book.open_orders if o.account_id == account.id})
        if not known or not instruments:
            continue
        prices = last_prices(client=client, instrument_ids=instruments)
        max_age = int(breaker_settings(tenant_id=account.tenant_id)["STALE_MARKET_DATA"]["max_age_seconds"])
        stale = {
            key: round((now - price.at).total_seconds())
            for key, price in prices.items()
            if price.at is not None and (now - price.at).total_seconds() > max_age
        }
        if not stale:
            continue
        oldest = max(stale.values())
        trip(
            tenant_id=account.tenant_id,
            account_id=account.id,
            kind="STALE_MARKET_DATA",
            reason=(f"no tick for {oldest} s on {len(stale)} instrument(s) with working orders (max age {max_age} s)"),
            metrics={
                "stale_seconds": stale,
                "max_age_seconds": max_age,
                "never_ticked": [key for key in instruments if key not in prices],
            },
            now=now,
        )
        tripped += 1
    return tripped


# -- RECONCILIATION_BREAK ------------------------------------------------------------------------


def reconciliation_break_evaluate(*, now: datetime | None = None) -> int:
    """Trip RECONCILIATION_BREAK on every account whose latest completed reconciliation run left
    unresolved drifts; return how many breakers tripped or stayed tripped (two queries)."""
    latest = list(
        ReconciliationRun.objects.filter(status=RunStatus.COMPLETED)
        .order_by("account_id", "-finished_at", "-created_at")
        .distinct("account_id")
        .values_list("id", "account_id", "tenant_id", "finished_at")
    )
    if not latest:
        return 0
    kinds: dict[UUID, Counter[str]] = {}
    for run_id, kind in ReconciliationDrift.objects.filter(
        run_id__in=[row[0] for row in latest], action=UNRESOLVED_ACTION
    ).values_list("run_id", "kind"):
        kinds.setdefault(run_id, Counter())[kind] += 1
    tripped = 0
    for run_id, account_id, tenant_id, finished_at in latest:
        found = kinds.get(run_id)
        if not found:
            continue
        listed = ", ".join(f"{count} {kind}" for kind, count in sorted(found.items()))
        trip(
            tenant_id=tenant_id,
            account_id=account_id,
            kind="RECONCILIATION_BREAK",
            reason=f"reconciliation run {run_id} left {sum(found.values())} unresolved drift(s): {listed}",
            metrics={
                "run_id": str(run_id),
                "finished_at": finished_at.isoformat() if finished_at else None,
                "unresolved": dict(sorted(found.items())),
            },
            now=now,
        )
        tripped += 1
    return tripped


def breaker_rules(*, tenant_id: UUID) -> list[dict[str, Any]]:
    """Each breaker kind's thresholds, action and reset for a tenant, as configured (`/risk/status`)."""
    rules = []
    settings = breaker_settings(tenant_id=tenant_id)
    for kind in CircuitBreaker.Kind.values:
        config = dict(settings[kind])
        rule = {
            "kind": kind,
            "action": config.pop("action"),
            "reset": config.pop("reset"),
            "reset_seconds": config.pop("reset_seconds", None),
        }
        rules.append({**rule, "thresholds": config})
    return rules
