"""The order state machine: one transition table, and the arithmetic of fills. No Django here.

Every assignment of `Order.state` goes through `advance` (via `apps.orders.services.lifecycle`),
so the table below is the whole truth about which moves exist. Fills are applied with
`apply_fill`, which keeps filled quantity and average price right even when the broker reports an
execution after the order reached a terminal state (a fill that lands after a cancel still
happened: it is recorded and the position follows, while the state stays what it is).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum

from apps.common.errors import StateConflict

ZERO = Decimal(0)


class OrderState(StrEnum):
    NEW = "NEW"
    ROUTED = "ROUTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    PENDING_CANCEL = "PENDING_CANCEL"
    PENDING_MODIFY = "PENDING_MODIFY"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


S = OrderState
TERMINAL = frozenset({S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED})
WORKING = frozenset({S.ROUTED, S.PARTIALLY_FILLED, S.PENDING_CANCEL, S.PENDING_MODIFY})
OPEN = frozenset(OrderState) - TERMINAL

# Brokers report out of the ideal order (a fill can land while a cancel or a modification is
# pending, a fill can arrive before the acknowledgement of the submission), so those moves are
# listed on purpose; anything missing is a bug or a broker anomaly. A pending state that moves
# to itself records a partial fill that arrived while the request was pending; a pending state
# that moves back to ROUTED / PARTIALLY_FILLED is the broker acknowledging a modification or
# refusing a cancel.
NEXT: Mapping[OrderState, frozenset[OrderState]] = {
    S.NEW: frozenset({S.ROUTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED}),
    S.ROUTED: frozenset(
        {S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL, S.PENDING_MODIFY, S.CANCELED, S.REJECTED, S.EXPIRED}
    ),
    S.PARTIALLY_FILLED: frozenset(
        {S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL, S.PENDING_MODIFY, S.CANCELED, S.EXPIRED}
    ),
    S.PENDING_CANCEL: frozenset({S.PENDING_CANCEL, S.ROUTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED}),
    S.PENDING_MODIFY: frozenset(
        {S.PENDING_MODIFY, S.ROUTED, S.PARTIALLY_FILLED, S.PENDING_CANCEL, S.FILLED, S.CANCELED, S.EXPIRED}
    ),
    S.FILLED: frozenset(),
    S.CANCELED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
}


class IllegalTransition(StateConflict):
    """A move the table does not list (409 STATE_CONFLICT)."""


def can_advance(current: OrderState, target: OrderState) -> bool:
    return target in NEXT[current]


def advance(current: OrderState, target: OrderState) -> OrderState:
    """Return `target` if it may follow `current`; raise IllegalTransition otherwise."""
    if target not in NEXT[current]:
        terminal = " (a terminal state never changes)" if current in TERMINAL else ""
        raise IllegalTransition(
            f"Order cannot move from {current} to {target}{terminal}",
            details={"state": current.value, "target": target.value},
        )
    return target


def cancel_target(current: OrderState) -> OrderState | None:
    """The state a cancel request leads to; None when a cancel is already pending (nothing to do)."""
    if current == S.PENDING_CANCEL:
        return None
    if current == S.NEW:
        return advance(current, S.CANCELED)  # never left us: cancelled at once
    return advance(current, S.PENDING_CANCEL)


def modify_target(current: OrderState) -> OrderState:
    """The state a modification leads to: NEW orders change in place, routed ones wait for the broker."""
    if current == S.NEW:
        return S.NEW
    if current in (S.ROUTED, S.PARTIALLY_FILLED):
        return advance(current, S.PENDING_MODIFY)
    reason = {
        S.PENDING_MODIFY: "a modification is already pending",
        S.PENDING_CANCEL: "a cancel is pending",
    }.get(current, "the order is closed")
    raise IllegalTransition(f"Order in state {current} cannot be modified: {reason}", details={"state": current.value})


@dataclass(frozen=True, slots=True)
class Progress:
    """How much of an order traded, and at what total value (average price = notional / filled)."""

    state: OrderState
    quantity: Decimal
    filled: Decimal = ZERO
    notional: Decimal = ZERO

    @property
    def remaining(self) -> Decimal:
        return max(self.quantity - self.filled, ZERO) if self.state not in TERMINAL else ZERO

    @property
    def average_price(self) -> Decimal | None:
        return self.notional / self.filled if self.filled else None


class OverFill(StateConflict):
    """An execution that would take the filled quantity past the order's quantity (a broker anomaly)."""


def fill_state(current: OrderState, *, filled: Decimal, quantity: Decimal) -> OrderState:
    """The state after an execution brought the filled quantity to `filled`."""
    if current in TERMINAL:
        return current  # late fill: recorded, the state stays
    if filled >= quantity:
        return advance(current, S.FILLED)
    if current in (S.PENDING_CANCEL, S.PENDING_MODIFY):
        return current  # the request is still pending; the fill only grows filled_quantity
    return advance(current, S.PARTIALLY_FILLED)


def apply_fill(progress: Progress, *, quantity: Decimal, price: Decimal) -> Progress:
    """Record one execution of `quantity` at `price`."""
    if quantity <= ZERO or price <= ZERO:
        raise StateConflict(
            "An execution needs a positive quantity and price",
            details={"quantity": str(quantity), "price": str(price)},
        )
    filled = progress.filled + quantity
    if filled > progress.quantity:
        raise OverFill(
            f"Execution of {quantity} takes the filled quantity to {filled}, past the order's {progress.quantity}",
            details={"filled": str(progress.filled), "quantity": str(progress.quantity), "execution": str(quantity)},
        )
    state = fill_state(progress.state, filled=filled, quantity=progress.quantity)
    return replace(progress, state=state, filled=filled, notional=progress.notional + quantity * price)


def reduce_quantity_check(*, new_quantity: Decimal, filled: Decimal) -> None:
    """A modification may not take the quantity to or below what has already filled."""
    if new_quantity <= filled:
        raise StateConflict(
            f"New quantity {new_quantity} must exceed the filled quantity {filled}",
            details={"quantity": str(new_quantity), "filled_quantity": str(filled)},
        )
