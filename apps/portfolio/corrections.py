"""Corrections of positions after the fact: a commission reported after its execution was applied.

IB sends an execution's commission report separately, sometimes seconds or more after the fill;
the fill is applied at once (with no commission) and the commission follows as a correction. The
position is re-derived from its executions in the order they were applied (average cost carries
the commissions of opening executions, realised P&L those of reducing ones), so applying the
correction is exact whatever the execution did to the position. Called inside the transaction
that updates the execution (the broker-event applier), which writes the audit row last.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from decimal import Decimal
from uuid import UUID

from django.utils import timezone

from apps.events.services import outbox_emit
from apps.events.streams import POSITIONS
from apps.portfolio import pnl
from apps.portfolio.models import Position
from apps.portfolio.serializers import dec, money, position_to_dict
from apps.portfolio.services import COST_QUANTUM, ExecutionData, PositionMove


def position_commission_correct(
    *, tenant_id: UUID, execution: ExecutionData, delta: Decimal, history: Sequence[ExecutionData]
) -> PositionMove | None:
    """Re-derive the position of `execution`'s instrument after its commission changed by `delta`.

    `history` is every execution of the account and instrument in the order they were applied,
    `execution` among them with its corrected commission. None when there is no position.
    """
    position = (
        Position.objects.select_for_update(of=("self",))
        .select_related("instrument")
        .filter(tenant_id=tenant_id, account_id=execution.account_id, instrument_id=execution.instrument_id)
        .first()
    )
    if position is None:
        return None
    multiplier = position.instrument.multiplier
    derived = pnl.Position()
    for item in history:
        derived = pnl.apply_execution(
            derived,
            side=item.side,
            quantity=item.quantity,
            price=item.price,
            commission=item.commission,
            multiplier=multiplier,
        )
    old = {
        "quantity": dec(position.quantity),
        "avg_cost": dec(position.avg_cost),
        "realized": dec(position.realized_pnl),
    }
    realized = money(derived.realized)
    change = realized - position.realized_pnl
    trade_day = execution.executed_at.astimezone(UTC).date()
    if position.realized_day is not None and trade_day == position.realized_day:
        position.realized_today += change
    position.quantity = derived.quantity
    position.avg_cost = derived.avg_cost.quantize(COST_QUANTUM) if derived.quantity else Decimal(0)
    position.realized_pnl = realized
    position.commissions += delta
    position.version += 1
    position.updated_at = timezone.now()
    position.save()
    body = position_to_dict(position)
    outbox_emit(
        tenant_id=tenant_id,
        stream=POSITIONS,
        kind="position.updated",
        aggregate_type="position",
        aggregate_id=position.id,
        payload={**body, "exec_id": execution.exec_id, "version": position.version, "correction": "commission"},
    )
    audited = {
        "quantity": body["quantity"],
        "avg_cost": body["avg_cost"],
        "realized": body["realized_pnl"],
        "exec_id": execution.exec_id,
        "commission": str(execution.commission),
    }
    return PositionMove(tenant_id, position, old, audited)
