"""Exposure published: gross exposure per account and per bucket, current and potential, on
`ev.exposure` (kind `risk.exposure`, through the outbox: a domain event of the tenant, so it is on
the tenant's stream and `/events/stream` too).

Recomputed on every fill (each `position.updated` on `ev.positions`, read by consumer group
`risk-exposure`) and on price moves, throttled: every account holding a position is revalued at
most once per `exposure.price_throttle_seconds`. An event goes out only when a figure changed
(the last published figures' digest is kept in Redis), so an idle book stays quiet.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
import redis
import structlog
from django.db import transaction

from apps.brokers.models import BrokerAccount
from apps.common.redis import get_redis
from apps.events.services import outbox_emit
from apps.events.streams import POSITIONS, StreamConsumer
from apps.portfolio.models import Position
from apps.risk.book import book_for
from apps.risk.config import defaults
from apps.risk.exposure import Holding, Working, by_bucket, gross
from apps.risk.models import AccountRisk
from apps.risk.services.pretrade import BookQuery, account_marks

log = structlog.get_logger(__name__)
EXPOSURE = "ev.exposure"
EXPOSURE_KIND = "risk.exposure"
GROUP = "risk-exposure"
DIGEST_KEY = "risk:exposure:digest:"
THROTTLE_KEY = "risk:exposure:priced:"


def _text(value: Any) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def bucket_status(
    holdings: Mapping[str, Holding], working: Sequence[Working], *, account: BrokerAccount, equity: Decimal
) -> dict[str, dict[str, Any]]:
    """Gross exposure per bucket (percent of the account's equity), with the bucket's target and max."""
    config = defaults()
    buckets = config.buckets_for(account.tenant.slug) if config.tenants else config.buckets
    rows = {}
    for name, exposure in by_bucket(holdings, working, buckets=buckets, account_code=account.account_code).items():
        limits = buckets.limits.get(name)
        current, potential = exposure.percent(equity)
        rows[name] = {
            "current": _text(current),
            "potential": _text(potential),
            "current_notional": _text(exposure.current),
            "potential_notional": _text(exposure.potential),
            "target": _text(limits.target_gross_pct) if limits and limits.target_gross_pct is not None else None,
            "max": _text(limits.max_gross_pct) if limits else None,
            "breach": bool(limits and current is not None and current > limits.max_gross_pct),
        }
    return rows


def account_exposure(*, account: BrokerAccount, now: datetime) -> dict[str, Any]:
    """The account's gross exposure now and if every open order filled, in total and per bucket."""
    row = AccountRisk.objects.filter(account=account).first()
    marks = account_marks(account=account, row=row, now=now)
    book, _ = book_for(BookQuery(account.id, None, since=now, tenant_id=account.tenant_id))
    working = [
        Working(str(o.instrument_id), o.remaining if o.side == "BUY" else -o.remaining)
        for o in book.open_orders
        if o.account_id == account.id
    ]
    total = gross(marks.holdings, working)
    current, potential = total.percent(marks.equity)
    bucket_rows = bucket_status(marks.holdings, working, account=account, equity=marks.equity)
    return {
        "account_id": str(account.id),
        "account_code": account.account_code,
        "equity": _text(marks.equity),
        "current": _text(current),
        "potential": _text(potential),
        "current_notional": _text(total.current),
        "potential_notional": _text(total.potential),
        "unpriced": list(total.unpriced),
        "buckets": bucket_rows,
        "as_of": now.isoformat(),
    }


def _digest(payload: dict[str, Any]) -> str:
    figures = {key: value for key, value in payload.items() if key != "as_of"}
    return hashlib.sha256(orjson.dumps(figures, option=orjson.OPT_SORT_KEYS)).hexdigest()


def exposure_publish(
    *, account: BrokerAccount, now: datetime, client: redis.Redis | None = None, force: bool = False
) -> dict[str, Any] | None:
    """Recompute one account's exposure; emit `risk.exposure` if a figure changed (or `force`)."""
    client = client or get_redis()
    payload = account_exposure(account=account, now=now)
    digest = _digest(payload)
    key = f"{DIGEST_KEY}{account.id}"
    if not force and client.get(key) in (digest, digest.encode()):
        return None
    with transaction.atomic(durable=True):
        outbox_emit(
            tenant_id=account.tenant_id,
            stream=EXPOSURE,
            kind=EXPOSURE_KIND,
            aggregate_type="account",
            aggregate_id=account.id,
            payload=payload,
        )
    client.set(key, digest, ex=24 * 3600)
    return payload


def _filled_accounts(client: redis.Redis) -> set[str]:
    consumer = StreamConsumer(client=client, stream=POSITIONS, group=GROUP, consumer=f"{socket.gethostname()}-exp")
    consumer.ensure_group()
    accounts: set[str] = set()
    while True:
        entries = consumer.read(count=500, block_ms=None)
        if not entries:
            return accounts
        for entry_id, fields in entries:
            try:
                accounts.add(str(UUID(orjson.loads(fields["payload"])["account_id"])))
            except (KeyError, ValueError, orjson.JSONDecodeError):
                log.warning("risk.exposure_entry_skipped", entry=entry_id)
        consumer.ack(*[entry_id for entry_id, _ in entries])


def exposure_refresh(*, now: datetime, client: redis.Redis | None = None) -> int:
    """Publish the exposure of accounts with new fills, and (throttled) of every account holding a position."""
    client = client or get_redis()
    try:
        filled = _filled_accounts(client)
    except redis.RedisError as exc:
        log.warning("risk.exposure_stream_unavailable", error=str(exc))
        filled = set()
    throttle = max(int(defaults().price_throttle_seconds), 1)
    holding = {str(a) for a in Position.objects.exclude(quantity=0).values_list("account_id", flat=True).distinct()}
    priced = {
        account_id
        for account_id in holding - filled
        if client.set(f"{THROTTLE_KEY}{account_id}", now.isoformat(), nx=True, ex=throttle)
    }
    published = 0
    accounts = BrokerAccount.objects.filter(id__in=[UUID(a) for a in filled | priced]).select_related("tenant")
    for account in accounts.order_by("id"):
        if exposure_publish(account=account, now=now, client=client) is not None:
            published += 1
    return published
