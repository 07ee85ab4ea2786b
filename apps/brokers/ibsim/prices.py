"""Price paths: a seeded random walk per instrument, or quotes replayed from a CSV of ticks.

Both produce `matching.Quote` values on the simulator's tick grid; the simulator asks for the next
quote of an instrument each tick of simulated time. The displayed bid/ask sizes are the liquidity
each quote offers (see `apps.brokers.matching`), so a lower `liquidity` gives partial fills.
"""

from __future__ import annotations

import bisect
import csv
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from apps.brokers.ibsim.catalogue import Catalogue, Instrument
from apps.brokers.matching import Quote


class PriceModel(Protocol):
    """Produces the quotes of instruments over simulated time."""

    def initial(self, instrument: Instrument, at: datetime) -> Quote: ...

    def step(self, instrument: Instrument, previous: Quote, at: datetime) -> Quote: ...


def quote_around(instrument: Instrument, last: Decimal, spread_ticks: int, size: Decimal) -> Quote:
    """A quote `spread_ticks` ticks wide around `last`, rounded to the instrument's tick."""
    last = max(instrument.round_to_tick(last), instrument.min_tick)
    tick = instrument.tick_size(last)
    half_down = spread_ticks // 2
    half_up = spread_ticks - half_down
    bid = max(last - tick * half_down, instrument.min_tick) if half_down else last
    ask = last + tick * half_up
    if bid >= ask:
        bid = ask - tick
    return Quote(bid=bid, ask=ask, last=last, bid_size=size, ask_size=size)


@dataclass
class RandomWalk:
    """A geometric random walk of the last price per instrument, seeded per instrument.

    Each instrument draws from its own generator seeded from (seed, conId), so the path of one
    instrument does not depend on which others are being stepped.
    """

    seed: int = 42
    volatility: float = 0.0005
    liquidity: Decimal = Decimal(10_000)
    _generators: dict[int, random.Random] = field(default_factory=dict)

    def _rng(self, con_id: int) -> random.Random:
        rng = self._generators.get(con_id)
        if rng is None:
            # Not cryptographic: a reproducible price path is the point.
            rng = self._generators[con_id] = random.Random(f"{self.seed}:{con_id}")  # noqa: S311
        return rng

    def initial(self, instrument: Instrument, at: datetime) -> Quote:
        return quote_around(instrument, instrument.reference_price, 2, self.liquidity)

    def step(self, instrument: Instrument, previous: Quote, at: datetime) -> Quote:
        rng = self._rng(instrument.con_id)
        move = Decimal(repr(round(rng.gauss(0.0, self.volatility), 8)))
        last = previous.last * (1 + move)
        spread = rng.choice((1, 2, 2, 3))
        return quote_around(instrument, last, spread, self.liquidity)


@dataclass(frozen=True, slots=True)
class _Row:
    at: datetime
    quote: Quote


class CsvReplay:
    """Quotes replayed from a CSV file: ``time,symbol,bid,ask,last[,bid_size,ask_size]``.

    ``time`` is ISO 8601 (UTC if no offset is given). The quote of an instrument at a moment is
    the last row at or before it; before its first row an instrument falls back to its
    reference price, and symbols not in the file follow `fallback` (a random walk by default).
    """

    def __init__(self, path: str | Path, catalogue: Catalogue, fallback: PriceModel | None = None) -> None:
        self.fallback: PriceModel = fallback or RandomWalk()
        self._rows: dict[int, list[_Row]] = {}
        with Path(path).open(newline="") as handle:
            for record in csv.DictReader(handle):
                instrument = catalogue.find_symbol(record["symbol"].strip(), record.get("currency", "") or "")
                if instrument is None:
                    raise ValueError(f"{path}: unknown or ambiguous symbol {record['symbol']!r}")
                at = datetime.fromisoformat(record["time"].strip())
                if at.tzinfo is None:
                    at = at.replace(tzinfo=UTC)
                size = Decimal(record.get("bid_size") or 10_000)
                quote = Quote(
                    bid=Decimal(record["bid"]),
                    ask=Decimal(record["ask"]),
                    last=Decimal(record["last"]),
                    bid_size=size,
                    ask_size=Decimal(record.get("ask_size") or size),
                )
                self._rows.setdefault(instrument.con_id, []).append(_Row(at, quote))
        for rows in self._rows.values():
            rows.sort(key=lambda row: row.at)

    def _at(self, instrument: Instrument, at: datetime) -> Quote | None:
        rows = self._rows.get(instrument.con_id)
        if not rows:
            return None
        index = bisect.bisect_right([row.at for row in rows], at) - 1
        return rows[index].quote if index >= 0 else None

    def initial(self, instrument: Instrument, at: datetime) -> Quote:
        if instrument.con_id not in self._rows:
            return self.fallback.initial(instrument, at)
        return self._at(instrument, at) or quote_around(instrument, instrument.reference_price, 2, Decimal(10_000))

    def step(self, instrument: Instrument, previous: Quote, at: datetime) -> Quote:
        if instrument.con_id not in self._rows:
            return self.fallback.step(instrument, previous, at)
        return self._at(instrument, at) or previous
