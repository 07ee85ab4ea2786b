"""Average-cost positions and P&L, as pure functions over Decimals. No Django here.

A position is signed (negative when short). Commissions are part of the cost: an execution that
opens or adds carries its commission into the average cost; one that reduces or closes charges
its commission to realised P&L. A flip (through zero) splits the execution pro rata into a
closing part and an opening part, commission included. So a round trip at one price realises
exactly minus the commissions, and splitting an execution into parts changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Position:
    quantity: Decimal = ZERO  # signed: > 0 long, < 0 short
    avg_cost: Decimal = ZERO  # per unit, commissions of the opening executions included
    realized: Decimal = ZERO

    @property
    def flat(self) -> bool:
        return self.quantity == ZERO


def _open(position: Position, signed: Decimal, price: Decimal, commission: Decimal, multiplier: Decimal) -> Position:
    """Add to (or open) a position in the direction of `signed`."""
    size = abs(position.quantity)
    added = abs(signed)
    # A buy's commission raises the cost; a short sale's commission lowers the proceeds.
    per_unit_fee = commission / (added * multiplier)
    entry = price + per_unit_fee if signed > ZERO else price - per_unit_fee
    avg = (position.avg_cost * size + entry * added) / (size + added)
    return Position(quantity=position.quantity + signed, avg_cost=avg, realized=position.realized)


def apply_execution(
    position: Position,
    *,
    side: str,
    quantity: Decimal,
    price: Decimal,
    commission: Decimal = ZERO,
    multiplier: Decimal = Decimal(1),
) -> Position:
    """The position after one execution of `quantity` (> 0) at `price` on `side` (BUY or SELL)."""
    if quantity <= ZERO:
        raise ValueError("execution quantity must be positive")
    signed = quantity if side == "BUY" else -quantity
    if position.quantity == ZERO or (position.quantity > ZERO) == (signed > ZERO):
        return _open(position, signed, price, commission, multiplier)
    closing = min(quantity, abs(position.quantity))
    closing_fee = commission * closing / quantity
    direction = Decimal(1) if position.quantity > ZERO else Decimal(-1)
    realized = position.realized + (price - position.avg_cost) * closing * multiplier * direction - closing_fee
    remaining = position.quantity + (closing if signed > ZERO else -closing)
    after_close = Position(quantity=remaining, avg_cost=position.avg_cost if remaining else ZERO, realized=realized)
    opening = quantity - closing
    if opening == ZERO:
        return after_close
    flipped = opening if signed > ZERO else -opening
    return _open(after_close, flipped, price, commission - closing_fee, multiplier)


def unrealized(position: Position, *, last: Decimal, multiplier: Decimal = Decimal(1)) -> Decimal:
    """Mark-to-market P&L of the open quantity at `last`."""
    return (last - position.avg_cost) * position.quantity * multiplier


def market_value(position: Position, *, last: Decimal, multiplier: Decimal = Decimal(1)) -> Decimal:
    return last * position.quantity * multiplier
