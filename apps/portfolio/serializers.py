"""Positions and P&L as JSON-ready dicts: decimals as plain strings, times RFC 3339 UTC with a `Z`."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from apps.events.prices import LastPrice
from apps.portfolio import pnl
from apps.portfolio.models import Position

MONEY_QUANTUM = Decimal("1e-8")


def dec(value: Decimal | None) -> str | None:
    """A decimal without exponent or trailing zeros (API.md's form), or None."""
    if value is None:
        return None
    text = format(Decimal(value).normalize(), "f")
    return "0" if text in ("-0", "0") else text


def ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def money(value: Decimal) -> Decimal:
    return value.quantize(MONEY_QUANTUM)


def as_pure(position: Position) -> pnl.Position:
    return pnl.Position(quantity=position.quantity, avg_cost=position.avg_cost, realized=position.realized_pnl)


def position_to_dict(position: Position, *, price: LastPrice | None = None) -> dict[str, Any]:
    """The position resource of API.md; market fields are null without a cached price."""
    multiplier = position.instrument.multiplier
    market_price = market_value = unrealized = None
    if price is not None:
        market_price = price.last
        market_value = money(pnl.market_value(as_pure(position), last=price.last, multiplier=multiplier))
        unrealized = money(pnl.unrealized(as_pure(position), last=price.last, multiplier=multiplier))
    return {
        "id": str(position.id),
        "account_id": str(position.account_id),
        "instrument_id": str(position.instrument_id),
        "symbol": position.symbol,
        "currency": position.currency,
        "quantity": dec(position.quantity),
        "avg_cost": dec(position.avg_cost),
        "market_price": dec(market_price),
        "market_value": dec(market_value),
        "unrealized_pnl": dec(unrealized),
        "realized_pnl": dec(position.realized_pnl),
        "price_at": ts(price.at) if price is not None else None,
        "updated_at": ts(position.updated_at),
    }
