"""The last-price cache: one Redis hash per instrument, `md:last:<instrument id>`.

Whoever has market data writes it (the IB gateway from its ticks, the paper broker from its
price path); positions read it for market value and unrealised P&L, and the paper broker fills
against it when a real feed wrote it. Fields: `bid`, `ask`, `last`, `bid_size`, `ask_size`,
`last_size` as decimal strings, `at` (RFC 3339 UTC) and `source` (`ib`, `paper`, …). It is a
cache: a reader that finds no hash, or no Redis, simply has no price.

The IB market data feed's keys live here too, because the two sides that share them sit on either
side of the app layers (the `marketdata` app publishes what tenants want, the gateway in `brokers`
holds the lines): `md:wanted` (instrument id → JSON `{"symbol","con_id","exchange","currency",
"since"}`, the union of every tenant's subscriptions, plus the field `*` once published),
`md:lines` (instrument id → JSON state of its line at IB: `ACTIVE`, or `REFUSED` with the reason),
the `md.control` stream (one entry per change of `md:wanted`) and `ev.l1` (every tick).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import redis

PREFIX = "md:last:"
FEED_WANTED = "md:wanted"
FEED_SENTINEL = "*"  # the field `md:wanted` always has once published: empty means "unknown"
FEED_LINES = "md:lines"
FEED_CONTROL = "md.control"
L1_STREAM = "ev.l1"
LINE_ACTIVE = "ACTIVE"
LINE_REFUSED = "REFUSED"


@dataclass(frozen=True, slots=True)
class LastPrice:
    """What the cache holds for one instrument."""

    last: Decimal
    bid: Decimal | None
    ask: Decimal | None
    bid_size: Decimal | None
    ask_size: Decimal | None
    at: datetime | None
    source: str
    last_size: Decimal | None = None


def last_price_key(instrument_id: Any) -> str:
    return f"{PREFIX}{instrument_id}"


def _decimal(value: Any) -> Decimal | None:
    if value in (None, b"", ""):
        return None
    try:
        parsed = Decimal(value.decode() if isinstance(value, bytes) else str(value))
    except InvalidOperation:
        return None
    return parsed if parsed.is_finite() else None


def _parse(raw: Mapping[Any, Any]) -> LastPrice | None:
    fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
    last = _decimal(fields.get("last"))
    if last is None:
        return None
    at_text = fields.get("at")
    at = None
    if at_text:
        try:
            at = datetime.fromisoformat(
                (at_text.decode() if isinstance(at_text, bytes) else at_text).replace("Z", "+00:00")
            )
        except ValueError:
            at = None
    source = fields.get("source", b"")
    return LastPrice(
        last=last,
        bid=_decimal(fields.get("bid")),
        ask=_decimal(fields.get("ask")),
        bid_size=_decimal(fields.get("bid_size")),
        ask_size=_decimal(fields.get("ask_size")),
        at=at,
        source=source.decode() if isinstance(source, bytes) else str(source),
        last_size=_decimal(fields.get("last_size")),
    )


def last_prices(*, client: redis.Redis, instrument_ids: Iterable[Any]) -> dict[str, LastPrice]:
    """The cached prices of these instruments, by instrument id (as text); none when Redis is away."""
    ids = [str(instrument_id) for instrument_id in dict.fromkeys(instrument_ids)]
    if not ids:
        return {}
    try:
        pipe = client.pipeline(transaction=False)
        for instrument_id in ids:
            pipe.hgetall(last_price_key(instrument_id))
        rows = pipe.execute()
    except redis.RedisError:
        return {}
    found = {}
    for instrument_id, raw in zip(ids, rows, strict=True):
        price = _parse(raw or {})
        if price is not None:
            found[instrument_id] = price
    return found


def last_price_set(*, client: redis.Redis | Any, instrument_id: Any, price: LastPrice) -> None:
    """Write one instrument's price (`client` may be a pipeline)."""
    fields = {
        "last": str(price.last),
        "bid": "" if price.bid is None else str(price.bid),
        "ask": "" if price.ask is None else str(price.ask),
        "bid_size": "" if price.bid_size is None else str(price.bid_size),
        "ask_size": "" if price.ask_size is None else str(price.ask_size),
        "last_size": "" if price.last_size is None else str(price.last_size),
        "at": (price.at or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "source": price.source,
    }
    client.hset(last_price_key(instrument_id), mapping=fields)
