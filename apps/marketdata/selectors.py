"""Reads of market data: a tenant's subscriptions, the state of their IB lines, the last quote."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
import redis
from django.db.models import Min, QuerySet

from apps.brokers.models import Instrument
from apps.common.errors import NotFound, ValidationFailed
from apps.common.queries import one_or_not_found
from apps.common.redis import get_redis
from apps.events.prices import FEED_LINES, LastPrice, last_prices
from apps.marketdata.models import MarketDataSubscription
from apps.tenants.models import Tenant


@dataclass(frozen=True, slots=True)
class LineState:
    """The state of an instrument's line at IB as the gateway last reported it."""

    state: str  # PENDING (not held yet, or no gateway holds the feed), ACTIVE, REFUSED
    reason: str
    updated_at: datetime | None


PENDING = LineState(state="PENDING", reason="", updated_at=None)


def instrument_find(*, symbol: str, exchange: str | None = None, currency: str | None = None) -> Instrument:
    """The active instrument a symbol names; a symbol listed several times needs exchange or currency."""
    candidates = Instrument.objects.filter(symbol__iexact=symbol.strip(), active=True)
    if exchange:
        candidates = candidates.filter(exchange__iexact=exchange)
    if currency:
        candidates = candidates.filter(currency=currency.upper())
    found = list(candidates.order_by("exchange", "currency")[:10])
    if not found:
        raise NotFound(f"No active instrument {symbol.upper()}" + (f" on {exchange}" if exchange else ""))
    if len(found) > 1:
        listings = ", ".join(f"{i.exchange}/{i.currency}" for i in found)
        raise ValidationFailed(
            f"Symbol {symbol.upper()} is listed more than once ({listings})",
            fields={"currency": [f"required (or exchange): {symbol.upper()} trades as {listings}"]},
            hint="Add exchange and/or currency",
        )
    return found[0]


def subscription_list(*, tenant: Tenant, symbol: str | None = None) -> QuerySet[MarketDataSubscription]:
    """The tenant's subscriptions (newest first once paginated), with their instruments."""
    rows = MarketDataSubscription.objects.filter(tenant=tenant).select_related("instrument")
    if symbol:
        rows = rows.filter(instrument__symbol__iexact=symbol)
    return rows


def subscription_get(*, tenant: Tenant, subscription_id: UUID) -> MarketDataSubscription:
    """One of the tenant's subscriptions; another tenant's is not found."""
    return one_or_not_found(
        MarketDataSubscription.objects.select_related("instrument"),
        f"Market data subscription {subscription_id} not found",
        tenant=tenant,
        id=subscription_id,
    )


def feed_union() -> list[dict[str, Any]]:
    """Every instrument some tenant subscribed to, with its oldest subscription's time (all tenants)."""
    rows = (
        MarketDataSubscription.objects.values(
            "instrument_id",
            "instrument__symbol",
            "instrument__con_id",
            "instrument__exchange",
            "instrument__currency",
        )
        .annotate(since=Min("created_at"))
        .order_by("since", "instrument_id")
    )
    return list(rows)


def feed_lines_in_use() -> int:
    """How many IB lines the union needs (one per distinct instrument)."""
    return MarketDataSubscription.objects.values("instrument_id").distinct().count()


def line_states(*, instrument_ids: Iterable[Any], client: redis.Redis | None = None) -> dict[str, LineState]:
    """The gateway's report on these instruments' lines (`md:lines`); PENDING when it has none."""
    ids = [str(instrument_id) for instrument_id in dict.fromkeys(instrument_ids)]
    if not ids:
        return {}
    try:
        raw = (client or get_redis()).hmget(FEED_LINES, ids)
    except redis.RedisError:
        raw = [None] * len(ids)
    states = {}
    for instrument_id, value in zip(ids, raw, strict=True):
        if not value:
            states[instrument_id] = PENDING
            continue
        data = orjson.loads(value)
        at = data.get("at")
        states[instrument_id] = LineState(
            state=str(data.get("state", "PENDING")),
            reason=str(data.get("reason", "")),
            updated_at=datetime.fromisoformat(at.replace("Z", "+00:00")) if at else None,
        )
    return states


def quote_get(*, instrument: Instrument) -> LastPrice:
    """The cached last quote of an instrument; not found when nothing wrote one."""
    price = last_prices(client=get_redis(), instrument_ids=[instrument.id]).get(str(instrument.id))
    if price is None:
        raise NotFound(
            f"No quote for {instrument.symbol} yet",
            hint="Subscribe with POST /marketdata/subscriptions; quotes arrive while the IB gateway is connected",
        )
    return price
