"""Average-cost P&L: worked examples and properties (round trips, split executions)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.portfolio.pnl import Position, apply_execution, market_value, unrealized

D = Decimal
TOLERANCE = D("1e-12")


def test_buy_add_reduce_flip_and_mark():
    position = apply_execution(Position(), side="BUY", quantity=D(100), price=D(10), commission=D(1))
    assert (position.quantity, position.avg_cost) == (D(100), D("10.01"))
    position = apply_execution(position, side="BUY", quantity=D(100), price=D(12), commission=D(1))
    assert position.avg_cost == D("11.01")
    position = apply_execution(position, side="SELL", quantity=D(50), price=D(13), commission=D(1))
    assert (position.quantity, position.realized) == (D(150), D("98.5"))
    assert unrealized(position, last=D(12)) == D("148.5")
    assert market_value(position, last=D(12)) == D(1800)
    position = apply_execution(position, side="SELL", quantity=D(200), price=D(12), commission=D(2))
    # 150 closed at 12 (fee 1.5), 50 opened short at 12 (fee 0.5 lowers the proceeds).
    assert position.quantity == D(-50)
    assert position.realized == D("98.5") + D("148.5") - D("1.5")
    assert position.avg_cost == D("11.99")
    assert unrealized(position, last=D(11)) == D("49.5")


def test_futures_multiplier():
    position = apply_execution(Position(), side="SELL", quantity=D(2), price=D(5000), multiplier=D(50))
    position = apply_execution(position, side="BUY", quantity=D(2), price=D(4990), multiplier=D(50))
    assert (position.quantity, position.realized) == (D(0), D(1000))


def test_zero_quantity_is_refused():
    with pytest.raises(ValueError, match="positive"):
        apply_execution(Position(), side="BUY", quantity=D(0), price=D(1))


prices = st.decimals(min_value=D("0.01"), max_value=D(5000), places=2)
quantities = st.integers(min_value=1, max_value=10_000).map(D)
fees = st.decimals(min_value=D(0), max_value=D(50), places=2)
sides = st.sampled_from(["BUY", "SELL"])


@settings(max_examples=300, deadline=None)
@given(side=sides, quantity=quantities, price=prices, fee_in=fees, fee_out=fees)
def test_round_trip_at_one_price_realises_minus_the_commissions(side, quantity, price, fee_in, fee_out):
    opened = apply_execution(Position(), side=side, quantity=quantity, price=price, commission=fee_in)
    back = "SELL" if side == "BUY" else "BUY"
    closed = apply_execution(opened, side=back, quantity=quantity, price=price, commission=fee_out)
    assert closed.quantity == 0
    assert abs(closed.realized - (-fee_in - fee_out)) < TOLERANCE


@settings(max_examples=300, deadline=None)
@given(
    start=st.lists(st.tuples(sides, quantities, prices, fees), max_size=5),
    side=sides,
    parts=st.lists(quantities, min_size=1, max_size=5),
    price=prices,
    fee=fees,
)
def test_splitting_an_execution_changes_nothing(start, side, parts, price, fee):
    position = Position()
    for s, q, p, f in start:
        position = apply_execution(position, side=s, quantity=q, price=p, commission=f)
    total = sum(parts, D(0))
    whole = apply_execution(position, side=side, quantity=total, price=price, commission=fee)
    split = position
    for part in parts:
        split = apply_execution(split, side=side, quantity=part, price=price, commission=fee * part / total)
    assert split.quantity == whole.quantity
    assert abs(split.realized - whole.realized) < TOLERANCE
    assert abs(split.avg_cost - whole.avg_cost) < TOLERANCE
