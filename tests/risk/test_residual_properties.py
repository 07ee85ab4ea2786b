"""Properties of the in-flight residual check (gates.residual_breaches), over random books.

- A partial fill alone (at the mark, limits and prices unchanged) never makes an accepted order's
  residual breach when the book started within its limits: the worst case was counted when the
  order was accepted. (From a position already over a limit, an order that does not make it worse
  is accepted; its residual may then breach on the other side once part of it has filled.)
- Monotonic: raising a limit never turns a residual that passes into one that is cancelled.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from apps.risk import gates
from apps.risk.exposure import Holding
from apps.risk.gates import LimitKind, OpenOrder
from tests.risk.test_gates import AAPL, buy, limit, snapshot

sides = st.sampled_from(["BUY", "SELL"])
orders = st.tuples(sides, st.integers(min_value=2, max_value=400))


def residual_limits(position: int, gross: int, concentration: int, loss: int) -> tuple[gates.Limit, ...]:
    return (
        limit(LimitKind.MAX_POSITION_QTY, str(position)),
        limit(LimitKind.MAX_GROSS_EXPOSURE, str(gross)),
        limit(LimitKind.CONCENTRATION, str(concentration)),
        limit(LimitKind.DAILY_LOSS, str(loss)),
        limit(LimitKind.TRAILING_DRAWDOWN, str(loss)),
    )


@settings(max_examples=150, deadline=None)
@given(
    st.lists(orders, min_size=1, max_size=12),
    st.integers(min_value=-300, max_value=300),
    st.integers(min_value=100, max_value=1200),
    st.integers(min_value=10, max_value=150),
    st.integers(min_value=10, max_value=150),
    st.data(),
)
def test_a_partial_fill_alone_never_cancels_an_accepted_residual(
    sequence, start, max_position, max_gross, max_concentration, data
):
    assume(abs(start) <= max_position and abs(start) <= 10 * min(max_gross, max_concentration))  # within limits
    limits = residual_limits(max_position, max_gross, max_concentration, 5000)
    holdings = {AAPL: Holding(AAPL, "AAPL", Decimal(start), Decimal(100))}
    working: list[OpenOrder] = []
    for index, (side, quantity) in enumerate(sequence):
        snap = snapshot(*limits, holdings=holdings, open_orders=tuple(working))
        if gates.evaluate(snap, buy(str(quantity), "100", side=side)).accepted:
            working.append(OpenOrder(f"o{index}", AAPL, side, Decimal(quantity)))
    if not working:
        return
    filled = data.draw(st.sampled_from(working))
    part = Decimal(data.draw(st.integers(min_value=1, max_value=int(filled.remaining) - 1)))
    held = holdings[AAPL]
    moved = held.quantity + (part if filled.side == "BUY" else -part)
    after_fill = {AAPL: Holding(AAPL, "AAPL", moved, held.price)}
    rest = OpenOrder(filled.order_id, AAPL, filled.side, filled.remaining - part)
    book = tuple(rest if o.order_id == filled.order_id else o for o in working)
    residual = buy(str(rest.remaining), "100", side=filled.side, replaces=filled.order_id)
    assert gates.residual_breaches(snapshot(*limits, holdings=after_fill, open_orders=book), residual) == ()


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(gates.RESIDUAL_KINDS)),
    st.integers(min_value=0, max_value=2000),
    st.integers(min_value=0, max_value=2000),
    orders,
    st.integers(min_value=-500, max_value=500),
    st.lists(orders, max_size=5),
)
def test_raising_a_limit_never_cancels_a_residual_that_passed(kind, value, raise_by, order, position, others):
    held = {AAPL: Holding(AAPL, "AAPL", Decimal(position), Decimal(100))}
    book = (
        OpenOrder("me", AAPL, order[0], Decimal(order[1])),
        *(OpenOrder(f"w{i}", AAPL, side, Decimal(q)) for i, (side, q) in enumerate(others)),
    )
    residual = buy(str(order[1]), "100", side=order[0], replaces="me")
    common = {"holdings": held, "open_orders": book, "day_pnl": Decimal(-position), "equity": Decimal(100000)}
    low = gates.residual_breaches(snapshot(limit(kind, str(value)), **common), residual)
    high = gates.residual_breaches(snapshot(limit(kind, str(value + raise_by)), **common), residual)
    assert low or not high
