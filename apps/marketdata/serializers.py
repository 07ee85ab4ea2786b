"""Subscriptions and quotes as the API (and the audit log) show them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from apps.events.prices import LastPrice
from apps.marketdata.models import MarketDataSubscription
from apps.marketdata.selectors import LineState


def ts(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def subscription_to_dict(subscription: MarketDataSubscription) -> dict[str, Any]:
    instrument = subscription.instrument
    return {
        "id": str(subscription.id),
        "instrument_id": str(instrument.id),
        "symbol": instrument.symbol,
        "exchange": instrument.exchange,
        "currency": instrument.currency,
        "con_id": instrument.con_id,
        "created_by": str(subscription.created_by_id) if subscription.created_by_id else None,
        "created_at": ts(subscription.created_at),
    }


def line_to_dict(line: LineState) -> dict[str, Any]:
    return {"state": line.state, "reason": line.reason or None, "updated_at": ts(line.updated_at)}


def quote_to_dict(symbol: str, instrument_id: Any, price: LastPrice) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "instrument_id": str(instrument_id),
        "bid": price.bid,
        "ask": price.ask,
        "last": price.last,
        "bid_size": price.bid_size,
        "ask_size": price.ask_size,
        "last_size": price.last_size,
        "at": ts(price.at),
        "source": price.source,
    }
