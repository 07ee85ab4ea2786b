"""The three-way reconciliation diff: our orders, IB's orders and executions, and positions.

Pure: the gateway gathers the three views (our tickets and the executions we booked; IB's open
orders, completed orders, executions and positions) and `diff` says what drifted and what to do:
publish the fills we missed (the applier deduplicates by exec id, so a fill is never counted
twice), close orders that finished at IB while we were away, bind IB's permId to orders whose
acknowledgement we never saw, send again a submission IB never received, adopt orders placed
outside the OMS (TWS, another client id: they become OMS orders flagged ADOPTED, with their
fills), and flag what no broker event can fix (position breaks).

Orders are matched by IB's permId first, then by orderRef (our client_order_id): permIds are
global and durable, orderRef survives every restart; IB's orderId is neither.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from apps.brokers.ib.mapping import CANCELLED_STATUSES, FILLED_STATUS, INACTIVE_STATUS
from apps.brokers.ib.wire import adopted_order_id

ZERO = Decimal(0)


class DriftKind(StrEnum):
    MISSING_FILL = "MISSING_FILL"
    UNKNOWN_EXECUTION = "UNKNOWN_EXECUTION"
    UNACKNOWLEDGED_ORDER = "UNACKNOWLEDGED_ORDER"
    NOT_AT_IB = "NOT_AT_IB"
    CLOSED_AT_IB = "CLOSED_AT_IB"
    INACTIVE_AT_IB = "INACTIVE_AT_IB"
    FILLED_QUANTITY = "FILLED_QUANTITY"
    UNKNOWN_ORDER_AT_IB = "UNKNOWN_ORDER_AT_IB"
    LATE_COMMISSION = "LATE_COMMISSION"
    POSITION_BREAK = "POSITION_BREAK"


class Action(StrEnum):
    PUBLISH_FILL = "PUBLISH_FILL"
    PUBLISH_ACCEPTED = "PUBLISH_ACCEPTED"
    PUBLISH_CANCELLED = "PUBLISH_CANCELLED"
    PUBLISH_REJECTED = "PUBLISH_REJECTED"
    PUBLISH_COMMISSION = "PUBLISH_COMMISSION"
    RESEND = "RESEND"
    ADOPT = "ADOPT"
    FLAG = "FLAG"


@dataclass(frozen=True, slots=True)
class OurOrder:
    """One order the gateway routed (its ticket), with what we have booked of it."""

    order_id: str
    client_order_id: str
    con_id: int | None
    side: str
    quantity: Decimal
    filled: Decimal
    perm_id: int | None
    terminal: bool
    outcome_unknown: bool  # sent, no acknowledgement seen


@dataclass(frozen=True, slots=True)
class IbOrder:
    """An order as IB reports it (open or completed)."""

    perm_id: int
    order_ref: str
    con_id: int
    side: str
    quantity: Decimal
    filled: Decimal
    status: str
    open: bool
    client_id: int = 0
    order_id: int = 0
    symbol: str = ""
    reason: str = ""
    # The order in OMS terms (order_type, prices, time_in_force, …) for adoption; "unmapped" says
    # why it cannot be adopted.
    details: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class IbExecution:
    exec_id: str
    perm_id: int
    order_ref: str
    con_id: int
    symbol: str
    side: str  # BUY / SELL
    quantity: Decimal
    price: Decimal
    commission: Decimal
    currency: str
    time: datetime


@dataclass(frozen=True, slots=True)
class OurExecution:
    exec_id: str
    con_id: int
    side: str
    quantity: Decimal
    commission: Decimal = ZERO
    order_id: str = ""


@dataclass(frozen=True, slots=True)
class Drift:
    """One difference found, and what the run does about it."""

    kind: DriftKind
    action: Action
    resolution: str
    order_id: str | None = None
    client_order_id: str = ""
    perm_id: int | None = None
    con_id: int | None = None
    ours: dict[str, str] = field(default_factory=dict)
    ib: dict[str, str] = field(default_factory=dict)
    execution: IbExecution | None = None
    adopt: IbOrder | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    drifts: tuple[Drift, ...]
    matched: int  # our open orders found at IB

    def of(self, action: Action) -> list[Drift]:
        return [drift for drift in self.drifts if drift.action == action]


def positions_from(executions: Iterable[OurExecution | IbExecution]) -> dict[int, Decimal]:
    """Net position per contract implied by executions."""
    totals: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for execution in executions:
        totals[execution.con_id] += execution.quantity if execution.side == "BUY" else -execution.quantity
    return dict(totals)


class _Index:
    def __init__(self, ours: Sequence[OurOrder]) -> None:
        self.by_perm = {order.perm_id: order for order in ours if order.perm_id}
        self.by_ref = {order.client_order_id: order for order in ours if order.client_order_id}

    def find(self, perm_id: int, order_ref: str) -> OurOrder | None:
        return self.by_perm.get(perm_id) or (self.by_ref.get(order_ref) if order_ref else None)


def _execution_drifts(
    index: _Index, executions: Sequence[IbExecution], booked: set[str], adopted: dict[int, OurOrder]
) -> list[Drift]:
    drifts = []
    for execution in executions:
        if execution.exec_id in booked:
            continue
        ours = adopted.get(execution.perm_id) or index.find(execution.perm_id, execution.order_ref)
        detail = {
            "exec_id": execution.exec_id,
            "side": execution.side,
            "quantity": str(execution.quantity),
            "price": str(execution.price),
            "time": execution.time.isoformat(),
        }
        if ours is None:
            drifts.append(
                Drift(
                    DriftKind.UNKNOWN_EXECUTION,
                    Action.FLAG,
                    "flagged: IB reports a fill of an order the OMS did not place; not booked",
                    perm_id=execution.perm_id,
                    client_order_id=execution.order_ref,
                    con_id=execution.con_id,
                    ib=detail,
                )
            )
            continue
        drifts.append(
            Drift(
                DriftKind.MISSING_FILL,
                Action.PUBLISH_FILL,
                "applied to the adopted order: the fill was published as a broker event"
                if execution.perm_id in adopted
                else "applied: the missed fill was published as a broker event",
                order_id=ours.order_id,
                client_order_id=ours.client_order_id,
                perm_id=execution.perm_id,
                con_id=execution.con_id,
                ib=detail,
                execution=execution,
            )
        )
    return drifts


def _order_drift(order: OurOrder, kind: DriftKind, action: Action, resolution: str, **facts: Any) -> Drift:
    """A drift of one of our orders: it carries that order's ids, whatever else it says."""
    return Drift(
        kind,
        action,
        resolution,
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        con_id=order.con_id,
        **facts,
    )


def _order_drifts(ours: OurOrder, at_ib: IbOrder | None, fills_at_ib: Decimal) -> list[Drift]:
    if at_ib is None:
        if ours.outcome_unknown and fills_at_ib == ZERO:
            return [
                _order_drift(
                    ours,
                    DriftKind.NOT_AT_IB,
                    Action.RESEND,
                    "sent again: IB has no order with this orderRef (the first send never arrived)",
                    ours={"state": "SENT_UNACKNOWLEDGED"},
                )
            ]
        if not ours.terminal and fills_at_ib == ZERO:
            return [
                _order_drift(
                    ours,
                    DriftKind.NOT_AT_IB,
                    Action.FLAG,
                    "flagged: an acknowledged order IB no longer reports (open or completed)",
                    perm_id=ours.perm_id,
                )
            ]
        return []
    drifts = []
    ib_view = {"status": at_ib.status, "filled": str(at_ib.filled), "perm_id": str(at_ib.perm_id)}
    if ours.perm_id != at_ib.perm_id:
        drifts.append(
            _order_drift(
                ours,
                DriftKind.UNACKNOWLEDGED_ORDER,
                Action.PUBLISH_ACCEPTED,
                "bound: found at IB by orderRef; permId recorded, not sent again",
                perm_id=at_ib.perm_id,
                ours={"perm_id": str(ours.perm_id or "")},
                ib=ib_view,
            )
        )
    if ours.terminal:
        return drifts
    if at_ib.status in CANCELLED_STATUSES:
        drifts.append(
            _order_drift(
                ours,
                DriftKind.CLOSED_AT_IB,
                Action.PUBLISH_CANCELLED,
                "closed: IB cancelled the order while we were not listening",
                perm_id=at_ib.perm_id,
                ib=ib_view,
            )
        )
    elif at_ib.status == INACTIVE_STATUS:
        drifts.append(
            _order_drift(
                ours,
                DriftKind.INACTIVE_AT_IB,
                Action.FLAG,
                "flagged: IB holds the order Inactive; it may still work, so it is left open",
                perm_id=at_ib.perm_id,
                ib=ib_view,
            )
        )
    elif at_ib.status == FILLED_STATUS and at_ib.filled > fills_at_ib:
        drifts.append(
            _order_drift(
                ours,
                DriftKind.FILLED_QUANTITY,
                Action.FLAG,
                "flagged: IB reports more filled than the executions it returned (older than today?)",
                perm_id=at_ib.perm_id,
                ours={"filled": str(ours.filled)},
                ib=ib_view | {"executions_filled": str(fills_at_ib)},
            )
        )
    return drifts


def _commission_drifts(booked: Sequence[OurExecution], executions: Sequence[IbExecution]) -> list[Drift]:
    """Booked executions whose commission IB reported (late) as something else than we published."""
    ours = {execution.exec_id: execution for execution in booked}
    drifts = []
    for execution in executions:
        mine = ours.get(execution.exec_id)
        if mine is None or not mine.order_id or execution.commission in (ZERO, mine.commission):
            continue
        drifts.append(
            Drift(
                DriftKind.LATE_COMMISSION,
                Action.PUBLISH_COMMISSION,
                "applied: the commission IB reported after the fill was published as a correction",
                order_id=mine.order_id,
                perm_id=execution.perm_id,
                con_id=execution.con_id,
                ours={"exec_id": execution.exec_id, "commission": str(mine.commission)},
                ib={"exec_id": execution.exec_id, "commission": str(execution.commission)},
                execution=None,
            )
        )
    return drifts


def _adoption(account_id: str, order: IbOrder) -> tuple[Drift, OurOrder | None]:
    """Adopt an order at IB the OMS did not place, or flag it when the OMS has no word for it."""
    # Completed orders do not say which client placed them (IB sends no client id with them).
    if order.client_id:
        origin = f"client id {order.client_id}"
    else:
        origin = "another API client or TWS" if order.order_ref else "TWS"
    ib_view = {
        "status": order.status,
        "side": order.side,
        "quantity": str(order.quantity),
        "filled": str(order.filled),
        "client_id": str(order.client_id),
        "order_id": str(order.order_id),
        "symbol": order.symbol,
    }
    unmapped = order.details.get("unmapped")
    if not account_id or unmapped or not order.con_id:
        why = f" ({unmapped})" if unmapped else ""
        return (
            Drift(
                DriftKind.UNKNOWN_ORDER_AT_IB,
                Action.FLAG,
                f"flagged: an order at IB that the OMS did not place ({origin}), not adopted{why}",
                client_order_id=order.order_ref,
                perm_id=order.perm_id,
                con_id=order.con_id,
                ib=ib_view,
            ),
            None,
        )
    order_id = adopted_order_id(account_id, order.perm_id)
    adopted = OurOrder(
        order_id=order_id,
        client_order_id=order.order_ref,
        con_id=order.con_id,
        side=order.side,
        quantity=order.quantity,
        filled=ZERO,
        perm_id=order.perm_id,
        terminal=not order.open,
        outcome_unknown=False,
    )
    drift = Drift(
        DriftKind.UNKNOWN_ORDER_AT_IB,
        Action.ADOPT,
        f"adopted: placed outside the OMS ({origin}); now an OMS order flagged ADOPTED, its fills applied",
        order_id=order_id,
        client_order_id=order.order_ref,
        perm_id=order.perm_id,
        con_id=order.con_id,
        ib=ib_view,
        adopt=order,
    )
    return drift, adopted


def diff(
    *,
    ours: Sequence[OurOrder],
    booked: Sequence[OurExecution],
    ib_orders: Sequence[IbOrder],
    ib_executions: Sequence[IbExecution],
    ib_positions: dict[int, Decimal],
    account_id: str = "",
) -> Plan:
    """Compare the three views and plan what to publish, resend, adopt and flag.

    With `account_id`, orders at IB that none of ours matches (open or completed) are adopted
    under a stable id (`wire.adopted_order_id`), and their executions are applied to them;
    without it they are only flagged.
    """
    index = _Index(ours)
    booked_ids = {execution.exec_id for execution in booked}
    ib_by_perm = {order.perm_id: order for order in ib_orders}
    ib_by_ref: dict[str, IbOrder] = {}
    for order in ib_orders:
        # An open order wins over a completed one with the same orderRef (a resend after a reject).
        if order.order_ref and (order.order_ref not in ib_by_ref or order.open):
            ib_by_ref[order.order_ref] = order
    pairs = []
    claimed: set[int] = set()
    for mine in ours:
        at_ib = (ib_by_perm.get(mine.perm_id) if mine.perm_id else None) or ib_by_ref.get(mine.client_order_id)
        if at_ib is not None:
            claimed.add(at_ib.perm_id)
        pairs.append((mine, at_ib))
    adoptions: list[Drift] = []
    adopted: dict[int, OurOrder] = {}
    for order in ib_orders:
        if order.perm_id in claimed or index.find(order.perm_id, order.order_ref) is not None:
            continue
        if not account_id and not order.open:
            continue
        drift, taken = _adoption(account_id, order)
        adoptions.append(drift)
        if taken is not None:
            adopted[order.perm_id] = taken
    drifts = _execution_drifts(index, ib_executions, booked_ids, adopted)
    drifts += _commission_drifts(booked, ib_executions)
    fills_by_order: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for execution in ib_executions:
        found = index.find(execution.perm_id, execution.order_ref)
        if found is not None:
            fills_by_order[found.order_id] += execution.quantity
    matched = 0
    for mine, at_ib in pairs:
        matched += at_ib is not None and not mine.terminal
        drifts += _order_drifts(mine, at_ib, fills_by_order[mine.order_id])
    drifts += adoptions
    # Positions: ours after the missed fills are applied, against IB's.
    to_apply = [drift.execution for drift in drifts if drift.execution is not None]
    ours_positions = positions_from([*booked, *to_apply])
    for con_id in sorted(set(ours_positions) | set(ib_positions)):
        held, theirs = ours_positions.get(con_id, ZERO), ib_positions.get(con_id, ZERO)
        if held != theirs:
            drifts.append(
                Drift(
                    DriftKind.POSITION_BREAK,
                    Action.FLAG,
                    "recorded: position derived from OMS executions differs from IB's",
                    con_id=con_id,
                    ours={"quantity": str(held)},
                    ib={"quantity": str(theirs)},
                )
            )
    return Plan(drifts=tuple(drifts), matched=matched)


def recorded(drifts: Sequence[Drift], *, exec_ids_shown: int = 20) -> list[Drift]:
    """The drifts as a run records them: the missed fills of one order as one drift (how many,
    how much, which exec ids), so that a backfill of 10,000 executions is not 10,000 rows and
    10,000 events. Everything else as it is."""
    out: list[Drift] = []
    fills: dict[str, list[Drift]] = {}
    for drift in drifts:
        if drift.kind == DriftKind.MISSING_FILL and drift.order_id:
            if drift.order_id not in fills:
                fills[drift.order_id] = []
                out.append(drift)  # its place in the list; replaced below
            fills[drift.order_id].append(drift)
        else:
            out.append(drift)
    for index, drift in enumerate(out):
        group = fills.get(drift.order_id or "") if drift.kind == DriftKind.MISSING_FILL else None
        if not group or len(group) == 1:
            continue
        executions = [d.execution for d in group if d.execution is not None]
        exec_ids = [e.exec_id for e in executions]
        first = group[0]
        out[index] = Drift(
            first.kind,
            first.action,
            f"{first.resolution} ({len(group)} executions)",
            order_id=first.order_id,
            client_order_id=first.client_order_id,
            perm_id=first.perm_id,
            con_id=first.con_id,
            ib={
                "executions": str(len(group)),
                "quantity": str(sum((e.quantity for e in executions), ZERO)),
                "first_time": min(e.time for e in executions).isoformat(),
                "last_time": max(e.time for e in executions).isoformat(),
                "exec_ids": ",".join(exec_ids[:exec_ids_shown]) + (",…" if len(exec_ids) > exec_ids_shown else ""),
            },
        )
    return out
