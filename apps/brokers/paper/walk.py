"""A seeded random walk of quotes per instrument, on the instrument's tick grid. Pure: no Django.

Each instrument draws from its own generator seeded from (seed, instrument key), so one
instrument's path does not depend on which others are stepped, and a run is reproducible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from apps.brokers.matching import Quote


@dataclass(frozen=True, slots=True)
class Listing:
    """What the walk and the venue need to know of an instrument."""

    key: str  # our instrument id
    symbol: str
    tick_size: Decimal
    reference_price: Decimal


def on_tick(price: Decimal, tick: Decimal) -> Decimal:
    """`price` rounded to the nearest multiple of `tick` (at least one tick)."""
    rounded = (price / tick).quantize(Decimal(1), rounding=ROUND_HALF_UP) * tick
    return max(rounded, tick)


def quote_around(listing: Listing, last: Decimal, spread_ticks: int, size: Decimal) -> Quote:
    """A quote `spread_ticks` ticks wide around `last`."""
    tick = listing.tick_size
    last = on_tick(last, tick)
    below = spread_ticks // 2
    bid = max(last - tick * below, tick)
    ask = max(last + tick * (spread_ticks - below), bid + tick)
    return Quote(bid=bid, ask=ask, last=last, bid_size=size, ask_size=size)


@dataclass
class RandomWalk:
    """Geometric random walk of the last price; the spread is one to three ticks."""

    seed: int = 42
    volatility: float = 0.0005
    liquidity: Decimal = Decimal(10_000)
    _generators: dict[str, random.Random] = field(default_factory=dict)

    def _rng(self, key: str) -> random.Random:
        rng = self._generators.get(key)
        if rng is None:
            # Not cryptographic: a reproducible price path is the point.
            rng = self._generators[key] = random.Random(f"{self.seed}:{key}")  # noqa: S311
        return rng

    def initial(self, listing: Listing, last: Decimal | None = None) -> Quote:
        return quote_around(listing, last if last is not None else listing.reference_price, 2, self.liquidity)

    def step(self, listing: Listing, previous: Quote) -> Quote:
        rng = self._rng(listing.key)
        move = Decimal(repr(round(rng.gauss(0.0, self.volatility), 8)))
        spread = rng.choice((1, 2, 2, 3))
        return quote_around(listing, previous.last * (1 + move), spread, self.liquidity)
