"""The pre-trade pipeline: every gate an order passes before it is written.

Today the gates check that the instrument is tradable and the account may take orders; the risk
and compliance apps add theirs to `GATES` (each a pure function of the `Candidate`). Every gate
is evaluated for a preview; placing stops at the first that fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from apps.common.errors import StateConflict, Unavailable, ValidationFailed


@dataclass(frozen=True, slots=True)
class Candidate:
    """What the gates see of an order about to be placed."""

    account_code: str
    account_status: str
    account_status_reason: str
    instrument_active: bool
    symbol: str
    side: str
    quantity: Decimal
    price: Decimal | None
    # What the account asks for while its broker connection is down: HOLD (accept, route later)
    # or REFUSE (503 UNAVAILABLE).
    when_disconnected: str = "HOLD"
    # HALTED by the broker connector itself (its circuit breaker is open), not by an operator:
    # treated as disconnected, so orders are held or refused per `when_disconnected`.
    gateway_halt: bool = False


@dataclass(frozen=True, slots=True)
class Check:
    gate: str
    passed: bool
    detail: str


def instrument_tradable(candidate: Candidate) -> Check:
    if candidate.instrument_active:
        return Check("instrument", True, f"{candidate.symbol} is tradable")
    return Check("instrument", False, f"{candidate.symbol} is not tradable (inactive instrument)")


def account_not_halted(candidate: Candidate) -> Check:
    if candidate.account_status == "HALTED" and not candidate.gateway_halt:
        reason = f": {candidate.account_status_reason}" if candidate.account_status_reason else ""
        return Check("account", False, f"Broker account {candidate.account_code} is HALTED{reason}")
    return Check("account", True, f"Broker account {candidate.account_code} is {candidate.account_status}")


def broker_down(account_status: str, *, gateway_halt: bool) -> bool:
    """Whether the account's broker connection is down (an operator's HALT is not a disconnection)."""
    return account_status in ("DISCONNECTED", "RECONNECTING") or (account_status == "HALTED" and gateway_halt)


def account_connected_or_holding(candidate: Candidate) -> Check:
    down = broker_down(candidate.account_status, gateway_halt=candidate.gateway_halt)
    if down and candidate.when_disconnected == "REFUSE":
        return Check(
            "connection",
            False,
            f"Broker account {candidate.account_code} is {candidate.account_status} and refuses orders until it "
            "is connected again",
        )
    return Check("connection", True, "held until the broker is back" if down else "broker connected")


GATES: tuple[Callable[[Candidate], Check], ...] = (
    instrument_tradable,
    account_not_halted,
    account_connected_or_holding,
)


def evaluate(candidate: Candidate) -> list[Check]:
    """Run every gate (for a preview)."""
    return [gate(candidate) for gate in GATES]


def enforce(candidate: Candidate) -> None:
    """Raise the refusal of the first gate that fails."""
    for gate in GATES:
        check = gate(candidate)
        if check.passed:
            continue
        if check.gate == "instrument":
            raise ValidationFailed(check.detail, fields={"symbol": [check.detail]})
        if check.gate == "connection":
            raise Unavailable(check.detail, details={"gate": check.gate, "account_status": candidate.account_status})
        raise StateConflict(check.detail, details={"gate": check.gate, "account_status": candidate.account_status})
