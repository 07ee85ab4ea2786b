"""The order state machine: the full matrix of moves, and property tests over random broker event sequences."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.orders.state import (
    NEXT,
    TERMINAL,
    IllegalTransition,
    OrderState,
    OverFill,
    Progress,
    advance,
    apply_fill,
    cancel_target,
    modify_target,
)

S = OrderState
ALLOWED = {
    (S.NEW, S.ROUTED), (S.NEW, S.PARTIALLY_FILLED), (S.NEW, S.FILLED), (S.NEW, S.CANCELED),
    (S.NEW, S.REJECTED), (S.NEW, S.EXPIRED),
    (S.ROUTED, S.PARTIALLY_FILLED), (S.ROUTED, S.FILLED), (S.ROUTED, S.PENDING_CANCEL),
    (S.ROUTED, S.PENDING_MODIFY), (S.ROUTED, S.CANCELED), (S.ROUTED, S.REJECTED), (S.ROUTED, S.EXPIRED),
    (S.PARTIALLY_FILLED, S.PARTIALLY_FILLED), (S.PARTIALLY_FILLED, S.FILLED),
    (S.PARTIALLY_FILLED, S.PENDING_CANCEL), (S.PARTIALLY_FILLED, S.PENDING_MODIFY),
    (S.PARTIALLY_FILLED, S.CANCELED), (S.PARTIALLY_FILLED, S.EXPIRED),
    (S.PENDING_CANCEL, S.PENDING_CANCEL), (S.PENDING_CANCEL, S.ROUTED), (S.PENDING_CANCEL, S.PARTIALLY_FILLED),
    (S.PENDING_CANCEL, S.FILLED), (S.PENDING_CANCEL, S.CANCELED), (S.PENDING_CANCEL, S.EXPIRED),
    (S.PENDING_MODIFY, S.PENDING_MODIFY), (S.PENDING_MODIFY, S.ROUTED), (S.PENDING_MODIFY, S.PARTIALLY_FILLED),
    (S.PENDING_MODIFY, S.PENDING_CANCEL), (S.PENDING_MODIFY, S.FILLED), (S.PENDING_MODIFY, S.CANCELED),
    (S.PENDING_MODIFY, S.EXPIRED),
}  # fmt: skip


@pytest.mark.parametrize("current", list(OrderState))
@pytest.mark.parametrize("target", list(OrderState))
def test_transition_matrix_every_pair(current, target):
    if (current, target) in ALLOWED:
        assert advance(current, target) == target
    else:
        with pytest.raises(IllegalTransition) as error:
            advance(current, target)
        assert error.value.details == {"state": current.value, "target": target.value}
        assert error.value.status == 409


def test_table_covers_every_state_and_terminal_states_have_no_exit():
    assert set(NEXT) == set(OrderState)
    assert all(not NEXT[state] for state in TERMINAL)


def test_cancel_target_new_is_canceled_routed_is_pending_and_pending_is_noop():
    assert cancel_target(S.NEW) == S.CANCELED
    assert cancel_target(S.ROUTED) == S.PENDING_CANCEL
    assert cancel_target(S.PARTIALLY_FILLED) == S.PENDING_CANCEL
    assert cancel_target(S.PENDING_CANCEL) is None
    with pytest.raises(IllegalTransition):
        cancel_target(S.FILLED)


def test_modify_target_rules():
    assert modify_target(S.NEW) == S.NEW
    assert modify_target(S.ROUTED) == S.PENDING_MODIFY
    for state in (S.PENDING_MODIFY, S.PENDING_CANCEL, *TERMINAL):
        with pytest.raises(IllegalTransition):
            modify_target(state)


def test_fill_while_cancel_pending_then_late_fill_after_cancel_recorded():
    progress = Progress(state=S.PENDING_CANCEL, quantity=Decimal(300))
    progress = apply_fill(progress, quantity=Decimal(100), price=Decimal("10"))
    assert (progress.state, progress.filled) == (S.PENDING_CANCEL, Decimal(100))
    progress = Progress(S.CANCELED, progress.quantity, progress.filled, progress.notional)
    progress = apply_fill(progress, quantity=Decimal(50), price=Decimal("11"))
    assert (progress.state, progress.filled, progress.notional) == (S.CANCELED, Decimal(150), Decimal(1550))


def test_three_partial_prints_give_cumulative_quantity_and_vwap():
    progress = Progress(state=S.ROUTED, quantity=Decimal(300))
    for price in ("10.00", "10.10", "10.20"):
        progress = apply_fill(progress, quantity=Decimal(100), price=Decimal(price))
    assert (progress.state, progress.filled, progress.average_price) == (S.FILLED, Decimal(300), Decimal("10.10"))


def test_overfill_is_refused():
    with pytest.raises(OverFill):
        apply_fill(Progress(S.ROUTED, Decimal(10), Decimal(5), Decimal(50)), quantity=Decimal(6), price=Decimal(1))


# --- property tests ---------------------------------------------------------------------------

REQUESTS = {
    "ack": S.ROUTED,
    "cancel_ack": S.CANCELED,
    "reject": S.REJECTED,
    "expire": S.EXPIRED,
}
events = st.one_of(
    st.sampled_from(["ack", "cancel_request", "cancel_ack", "modify_request", "modify_ack", "reject", "expire"]),
    st.tuples(
        st.just("fill"),
        st.integers(min_value=1, max_value=400).map(Decimal),
        st.decimals(min_value=Decimal("0.01"), max_value=Decimal(1000), places=2),
    ),
)


def step(progress: Progress, event) -> Progress:
    """Drive the machine the way the applier does; illegal moves are refused and change nothing."""
    state = progress.state
    try:
        if isinstance(event, tuple):
            _, quantity, price = event
            return apply_fill(progress, quantity=quantity, price=price)
        if event == "cancel_request":
            target = cancel_target(state)
            return (
                progress if target is None else Progress(target, progress.quantity, progress.filled, progress.notional)
            )
        if event == "modify_request":
            target = modify_target(state)
        elif event == "modify_ack":
            target = S.PARTIALLY_FILLED if progress.filled else S.ROUTED
            if state != S.PENDING_MODIFY:
                return progress
        else:
            target = REQUESTS[event]
        return Progress(advance(state, target), progress.quantity, progress.filled, progress.notional)
    except (IllegalTransition, OverFill):
        return progress


@settings(max_examples=300, deadline=None)
@given(quantity=st.integers(min_value=1, max_value=1000).map(Decimal), sequence=st.lists(events, max_size=40))
def test_random_event_sequences_keep_the_invariants(quantity, sequence):
    progress = Progress(state=S.NEW, quantity=quantity)
    fills: list[tuple[Decimal, Decimal]] = []
    for event in sequence:
        before = progress
        progress = step(progress, event)
        if before.state in TERMINAL:
            assert progress.state == before.state, "a terminal state never changes"
        assert progress.filled >= before.filled, "filled quantity never decreases"
        assert progress.filled <= progress.quantity, "filled quantity never exceeds the quantity"
        if progress.filled != before.filled:
            fills.append((progress.filled - before.filled, event[2]))
            if before.state in (S.CANCELED, S.EXPIRED):
                assert progress.state == before.state, "a fill after cancel is recorded, state unchanged"
        if progress.filled == progress.quantity and before.state not in TERMINAL:
            assert progress.state == S.FILLED
    total = sum((q for q, _ in fills), Decimal(0))
    assert progress.filled == total
    if fills:
        vwap = sum((q * p for q, p in fills), Decimal(0)) / total
        assert progress.average_price == vwap
    else:
        assert progress.average_price is None
