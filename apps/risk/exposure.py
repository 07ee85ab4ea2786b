"""Exposure arithmetic of spec 003: gross exposure, current and potential, per instrument and account.

Pure (no Django). Quantities are signed (long > 0, short < 0); open orders count by their
remaining quantity. The *potential* position of an instrument is the worst case if every open
order filled: buys and sells of one instrument cannot both be the worst case, so the potential
absolute position is max(|q + buys|, |q − sells|). Gross exposure is
(|long notional| + |short notional|) / equity × 100.

Buckets (spec 003): every position belongs to one bucket, `LT` (long-term, with a target and a
max) or `MM` (market-making), by its account or its symbol (configurable, per tenant); gross
exposure is also computed per bucket, against the account's whole equity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

ZERO = Decimal(0)
HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class Holding:
    """One instrument's position in an account, with the price it is valued at (None: unpriced)."""

    instrument_id: str
    symbol: str
    quantity: Decimal
    price: Decimal | None
    multiplier: Decimal = Decimal(1)


@dataclass(frozen=True, slots=True)
class Working:
    """One open order's remaining quantity, signed by side (BUY > 0, SELL < 0)."""

    instrument_id: str
    signed_remaining: Decimal


@dataclass(frozen=True, slots=True)
class Exposure:
    """Gross notional now and if every open order filled; `unpriced` lists instruments left out."""

    current: Decimal
    potential: Decimal
    unpriced: tuple[str, ...]

    def percent(self, equity: Decimal) -> tuple[Decimal | None, Decimal | None]:
        """Both figures as a percentage of equity (None when equity is not positive)."""
        if equity <= ZERO:
            return None, None
        return pct(self.current, equity), pct(self.potential, equity)


def pct(amount: Decimal, equity: Decimal) -> Decimal:
    return (amount / equity * HUNDRED).quantize(Decimal("0.0001"))


def worst_position(quantity: Decimal, working: Iterable[Decimal]) -> Decimal:
    """The largest absolute position `quantity` can reach if any subset of `working` fills."""
    buys = sum((w for w in working if w > ZERO), ZERO)
    sells = sum((w for w in working if w < ZERO), ZERO)
    return max(abs(quantity + buys), abs(quantity + sells))


def gross(holdings: Mapping[str, Holding], working: Iterable[Working]) -> Exposure:
    """Gross exposure of an account (holdings keyed by instrument id, open orders included in potential)."""
    by_instrument: dict[str, list[Decimal]] = {}
    for order in working:
        by_instrument.setdefault(order.instrument_id, []).append(order.signed_remaining)
    current = potential = ZERO
    unpriced: list[str] = []
    for instrument_id in sorted(set(holdings) | set(by_instrument)):
        holding = holdings.get(instrument_id)
        if holding is None or holding.price is None:
            if holding is None or holding.quantity or by_instrument.get(instrument_id):
                unpriced.append(holding.symbol if holding is not None else instrument_id)
            continue
        value = holding.price * holding.multiplier
        current += abs(holding.quantity) * value
        potential += worst_position(holding.quantity, by_instrument.get(instrument_id, ())) * value
    return Exposure(current=current, potential=potential, unpriced=tuple(unpriced))


@dataclass(frozen=True, slots=True)
class BucketLimits:
    """A bucket's gross caps in percent of equity; `target_gross_pct` is what de-risking aims at."""

    max_gross_pct: Decimal
    target_gross_pct: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Buckets:
    """How positions are assigned to buckets: by account code first, then by symbol, else `default`."""

    default: str = "LT"
    limits: Mapping[str, BucketLimits] = field(default_factory=dict)
    accounts: Mapping[str, str] = field(default_factory=dict)
    symbols: Mapping[str, str] = field(default_factory=dict)

    def of(self, *, account_code: str, symbol: str) -> str:
        return self.accounts.get(account_code) or self.symbols.get(symbol.upper()) or self.default


def by_bucket(
    holdings: Mapping[str, Holding], working: Iterable[Working], *, buckets: Buckets, account_code: str
) -> dict[str, Exposure]:
    """Gross exposure per bucket (every configured bucket appears, empty ones at zero)."""
    orders = list(working)
    split: dict[str, dict[str, Holding]] = {name: {} for name in (*buckets.limits, buckets.default)}
    for key, holding in holdings.items():
        split.setdefault(buckets.of(account_code=account_code, symbol=holding.symbol), {})[key] = holding
    result = {}
    for name, part in sorted(split.items()):
        result[name] = gross(part, [order for order in orders if order.instrument_id in part])
    return result
