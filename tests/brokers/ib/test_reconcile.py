"""The three-way diff and the wire format, without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import uuid4

from apps.brokers.ib import wire
from apps.brokers.ib.reconcile import (
    Action,
    DriftKind,
    IbExecution,
    IbOrder,
    OurExecution,
    OurOrder,
    diff,
    recorded,
)

AT = datetime(2025, 3, 10, 15, 0, tzinfo=UTC)


def ours(ref: str = "c1", **kw: object) -> OurOrder:
    base: dict[str, object] = {
        "order_id": f"id-{ref}",
        "client_order_id": ref,
        "con_id": 1,
        "side": "BUY",
        "quantity": Decimal(10),
        "filled": Decimal(0),
        "perm_id": 100,
        "terminal": False,
        "outcome_unknown": False,
    }
    return OurOrder(**(base | kw))  # type: ignore[arg-type]


def at_ib(ref: str = "c1", **kw: object) -> IbOrder:
    base: dict[str, object] = {
        "perm_id": 100,
        "order_ref": ref,
        "con_id": 1,
        "side": "BUY",
        "quantity": Decimal(10),
        "filled": Decimal(0),
        "status": "Submitted",
        "open": True,
    }
    return IbOrder(**(base | kw))  # type: ignore[arg-type]


def execution(exec_id: str, quantity: int, perm_id: int = 100, ref: str = "c1") -> IbExecution:
    return IbExecution(exec_id, perm_id, ref, 1, "AAPL", "BUY", Decimal(quantity), Decimal(190), Decimal(1), "USD", AT)


def test_missed_fills_are_published_and_booked_ones_are_not() -> None:
    plan = diff(
        ours=[ours()],
        booked=[OurExecution("e1", 1, "BUY", Decimal(4))],
        ib_orders=[at_ib(filled=Decimal(10), status="Filled", open=False)],
        ib_executions=[execution("e1", 4), execution("e2", 6)],
        ib_positions={1: Decimal(10)},
    )
    assert [(d.kind, d.action, d.execution.exec_id if d.execution else None) for d in plan.drifts] == [
        (DriftKind.MISSING_FILL, Action.PUBLISH_FILL, "e2")
    ]


def test_unknown_outcome_found_by_order_ref_is_bound_not_resent() -> None:
    plan = diff(
        ours=[ours(perm_id=None, outcome_unknown=True)],
        booked=[],
        ib_orders=[at_ib(perm_id=555)],
        ib_executions=[],
        ib_positions={},
    )
    assert [(d.kind, d.action, d.perm_id) for d in plan.drifts] == [
        (DriftKind.UNACKNOWLEDGED_ORDER, Action.PUBLISH_ACCEPTED, 555)
    ]


def test_unknown_outcome_missing_at_ib_is_resent() -> None:
    plan = diff(
        ours=[ours(perm_id=None, outcome_unknown=True)], booked=[], ib_orders=[], ib_executions=[], ib_positions={}
    )
    assert [(d.kind, d.action) for d in plan.drifts] == [(DriftKind.NOT_AT_IB, Action.RESEND)]


def test_cancelled_while_away_is_closed_and_foreign_orders_flagged() -> None:
    plan = diff(
        ours=[ours()],
        booked=[],
        ib_orders=[at_ib(status="Cancelled", open=False), at_ib("manual", perm_id=900, client_id=0)],
        ib_executions=[],
        ib_positions={},
    )
    assert [(d.kind, d.action) for d in plan.drifts] == [
        (DriftKind.CLOSED_AT_IB, Action.PUBLISH_CANCELLED),
        (DriftKind.UNKNOWN_ORDER_AT_IB, Action.FLAG),
    ]


def test_position_break_counts_fills_about_to_be_applied() -> None:
    plan = diff(
        ours=[ours()],
        booked=[],
        ib_orders=[at_ib(status="Filled", filled=Decimal(10), open=False)],
        ib_executions=[execution("e1", 10)],
        ib_positions={1: Decimal(15)},
    )
    breaks = [d for d in plan.drifts if d.kind == DriftKind.POSITION_BREAK]
    assert [(b.ours, b.ib) for b in breaks] == [({"quantity": "10"}, {"quantity": "15"})]


def test_wire_round_trip_gives_broker_event_arguments() -> None:
    account_id, order_id = uuid4(), uuid4()
    fill = wire.WireFill("e1", Decimal("3"), Decimal("190.01"), Decimal("1.00"), "USD", AT)
    event = wire.WireEvent("execution", "t", str(account_id), str(order_id), broker_order_id="7", fill=fill)
    decoded = wire.decode(wire.encode(event))
    assert decoded == {
        "kind": "execution",
        "account_id": account_id,
        "order_id": order_id,
        "broker_order_id": "7",
        "reason": "",
        "request": "submit",
        "fill": {
            "exec_id": "e1",
            "quantity": Decimal(3),
            "price": Decimal("190.01"),
            "commission": Decimal("1.00"),
            "currency": "USD",
            "executed_at": AT,
        },
    }


def test_foreign_orders_are_adopted_with_their_fills_under_a_stable_id() -> None:
    account_id = str(uuid4())
    manual = at_ib("", perm_id=900, client_id=0, details={"order_type": "LMT"})
    other = at_ib("theirs-1", perm_id=901, client_id=9, status="Filled", open=False, details={"order_type": "MKT"})
    plan = diff(
        ours=[ours()],
        booked=[],
        ib_orders=[at_ib(), manual, other],
        ib_executions=[execution("e9", 10, perm_id=901, ref="theirs-1")],
        ib_positions={1: Decimal(10)},
        account_id=account_id,
    )
    adoptions = plan.of(Action.ADOPT)
    assert [(d.perm_id, d.order_id) for d in adoptions] == [
        (900, wire.adopted_order_id(account_id, 900)),
        (901, wire.adopted_order_id(account_id, 901)),
    ]
    assert adoptions[0].resolution.startswith("adopted: placed outside the OMS (TWS)")
    assert "client id 9" in adoptions[1].resolution
    (fill,) = plan.of(Action.PUBLISH_FILL)
    assert (fill.order_id, fill.execution and fill.execution.exec_id) == (wire.adopted_order_id(account_id, 901), "e9")
    # The adopted fill is counted in our position: no break.
    assert not [d for d in plan.drifts if d.kind == DriftKind.POSITION_BREAK]
    assert wire.adopted_order_id(account_id, 900) == wire.adopted_order_id(account_id, 900)


def test_foreign_order_without_an_oms_equivalent_is_flagged_not_adopted() -> None:
    strange = at_ib("", perm_id=902, client_id=0, details={"unmapped": "IB order type 'VWAP' has no OMS equivalent"})
    plan = diff(ours=[], booked=[], ib_orders=[strange], ib_executions=[], ib_positions={}, account_id=str(uuid4()))
    (drift,) = plan.drifts
    assert (drift.kind, drift.action) == (DriftKind.UNKNOWN_ORDER_AT_IB, Action.FLAG)
    assert "VWAP" in drift.resolution


def test_a_run_records_the_missed_fills_of_an_order_as_one_drift() -> None:
    plan = diff(
        ours=[ours(), ours("c2", order_id="id-c2", perm_id=101)],
        booked=[],
        ib_orders=[at_ib(), at_ib("c2", perm_id=101)],
        ib_executions=[execution(f"e{i}", 1) for i in range(30)] + [execution("x1", 2, perm_id=101, ref="c2")],
        ib_positions={1: Decimal(32)},
    )
    assert len(plan.of(Action.PUBLISH_FILL)) == 31  # each one is published
    rows = recorded(plan.drifts)
    assert [(d.kind, d.order_id) for d in rows] == [
        (DriftKind.MISSING_FILL, "id-c1"),
        (DriftKind.MISSING_FILL, "id-c2"),
    ]
    grouped = rows[0]
    assert grouped.resolution == "applied: the missed fill was published as a broker event (30 executions)"
    assert (grouped.ib["executions"], grouped.ib["quantity"]) == ("30", "30")
    assert grouped.ib["exec_ids"].startswith("e0,e1,") and grouped.ib["exec_ids"].endswith(",…")
    assert rows[1] == plan.drifts[-1]  # a single fill stays as it was


def test_a_late_commission_found_by_reconciliation_is_published_as_a_correction() -> None:
    plan = diff(
        ours=[ours()],
        booked=[OurExecution("e1", 1, "BUY", Decimal(10), Decimal(0), "id-c1")],
        ib_orders=[at_ib(status="Filled", filled=Decimal(10), open=False)],
        ib_executions=[execution("e1", 10)],  # IB now reports its commission: 1
        ib_positions={1: Decimal(10)},
    )
    (drift,) = plan.drifts
    assert (drift.kind, drift.action, drift.order_id) == (DriftKind.LATE_COMMISSION, Action.PUBLISH_COMMISSION, "id-c1")
    assert (drift.ours["commission"], drift.ib["commission"]) == ("0", "1")
