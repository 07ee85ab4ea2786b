"""Writes of positions and P&L snapshots.

`position_apply_execution` runs inside the transaction of whoever records an execution (the
broker-event applier of `orders`, which sits above this app and hands over plain data), so an
execution and the position it moves commit together, with the `position.updated` event and the
audit row. A position row is locked with `select_for_update`; the applier has already locked the
order, so locks are always taken order first, then position, and never across network I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from apps.audit.models import AuditLog
from apps.audit.services import audit_entry, audit_record
from apps.brokers.models import Instrument
from apps.common.context import Actor
from apps.common.redis import get_redis
from apps.events.prices import LastPrice, last_prices
from apps.events.services import outbox_emit
from apps.events.streams import POSITIONS
from apps.portfolio import pnl
from apps.portfolio.models import PnlSnapshot, Position
from apps.portfolio.serializers import as_pure, dec, money, position_to_dict

COST_QUANTUM = Decimal("1e-12")
SYSTEM = Actor.system("portfolio")


@dataclass(frozen=True, slots=True)
class ExecutionData:
    """An execution as the portfolio needs it (plain data: no order, no broker event)."""

    account_id: UUID
    instrument_id: UUID
    exec_id: str
    side: str
    quantity: Decimal
    price: Decimal
    commission: Decimal
    executed_at: datetime


# Positions locked (and moved) in the current `positions_batched` block, by (account, instrument).
_batched: ContextVar[dict[tuple[UUID, UUID], Position] | None] = ContextVar("positions_batched", default=None)


@contextmanager
def positions_batched() -> Iterator[None]:
    """Lock each position once and save it once at the end of the block (the applier's batch).

    Every execution still gets its own `position.updated` event and audit row; only the row's
    SELECT ... FOR UPDATE and UPDATE are shared by the block's executions. Use it inside the
    transaction, and call `positions_flush` before anything reads positions from the database.
    """
    token = _batched.set({})
    try:
        yield
        positions_flush()
    finally:
        _batched.reset(token)


def positions_flush() -> None:
    """Save the positions moved so far in the current `positions_batched` block (and forget them)."""
    cache = _batched.get()
    if cache:
        for position in cache.values():
            position.save()
        cache.clear()


def _locked_position(*, tenant_id: UUID, account_id: UUID, instrument_id: UUID) -> Position:
    cache = _batched.get()
    if cache is not None:
        position = cache.get((account_id, instrument_id))
        if position is None:
            position = _lock_position(tenant_id=tenant_id, account_id=account_id, instrument_id=instrument_id)
            cache[(account_id, instrument_id)] = position
        return position
    return _lock_position(tenant_id=tenant_id, account_id=account_id, instrument_id=instrument_id)


def _lock_position(*, tenant_id: UUID, account_id: UUID, instrument_id: UUID) -> Position:
    positions = Position.objects.select_for_update(of=("self",)).select_related("instrument")
    key = {"tenant_id": tenant_id, "account_id": account_id, "instrument_id": instrument_id}
    try:
        return positions.get(**key)
    except Position.DoesNotExist:
        pass
    instrument = Instrument.objects.get(id=instrument_id)
    now = timezone.now()
    # Insert-or-nothing on the unique key, then lock: two first executions racing cannot both insert.
    Position.objects.bulk_create(
        [Position(**key, symbol=instrument.symbol, currency=instrument.currency, created_at=now, updated_at=now)],
        ignore_conflicts=True,
    )
    return positions.get(**key)


@dataclass(frozen=True, slots=True)
class PositionMove:
    """A position moved by one execution, with the before and after its audit row records."""

    tenant_id: UUID
    position: Position
    before: dict[str, Any]
    after: dict[str, Any]


def position_apply_execution(*, tenant_id: UUID, execution: ExecutionData) -> PositionMove:
    """Move the account's position by one execution; call inside the transaction recording it.

    The caller guarantees each execution is applied once (its exec id is unique), and writes the
    audit row with `position_move_audit` as its transaction's last write: the audit chain head is
    locked from the first audit row to the commit, and every write of the tenant waits for it.
    """
    position = _locked_position(
        tenant_id=tenant_id, account_id=execution.account_id, instrument_id=execution.instrument_id
    )
    before = as_pure(position)
    after = pnl.apply_execution(
        before,
        side=execution.side,
        quantity=execution.quantity,
        price=execution.price,
        commission=execution.commission,
        multiplier=position.instrument.multiplier,
    )
    realized = money(after.realized)
    delta = realized - position.realized_pnl
    trade_day = execution.executed_at.astimezone(UTC).date() if execution.executed_at else None
    if trade_day is not None and (position.realized_day is None or trade_day > position.realized_day):
        position.realized_day, position.realized_today = trade_day, delta
    elif trade_day == position.realized_day:
        position.realized_today += delta
    # A late report of an earlier day's execution only moves the running total.
    old = {
        "quantity": dec(position.quantity),
        "avg_cost": dec(position.avg_cost),
        "realized": dec(position.realized_pnl),
    }
    position.quantity = after.quantity
    position.avg_cost = after.avg_cost.quantize(COST_QUANTUM) if after.quantity else Decimal(0)
    position.realized_pnl = realized
    position.commissions += execution.commission
    position.executions += 1
    position.version += 1
    position.updated_at = timezone.now()
    if position.last_execution_at is None or execution.executed_at > position.last_execution_at:
        position.last_execution_at = execution.executed_at
    if _batched.get() is None:
        position.save()  # else once, at the end of the batch
    body = position_to_dict(position)
    outbox_emit(
        tenant_id=tenant_id,
        stream=POSITIONS,
        kind="position.updated",
        aggregate_type="position",
        aggregate_id=position.id,
        payload={**body, "exec_id": execution.exec_id, "version": position.version},
    )
    audited = {
        "quantity": body["quantity"],
        "avg_cost": body["avg_cost"],
        "realized": body["realized_pnl"],
        "exec_id": execution.exec_id,
    }
    return PositionMove(tenant_id, position, old, audited)


def position_move_audit(*, move: PositionMove, actor: Actor) -> None:
    """Audit one position move; call it among the last writes of the transaction."""
    position_move_audit_entry(move=move, actor=actor).save(force_insert=True)


def position_move_audit_entry(*, move: PositionMove, actor: Actor) -> AuditLog:
    """The unsaved audit row of one position move (for `bulk_create` with a batch's other rows)."""
    return audit_entry(
        tenant_id=move.tenant_id,
        actor=actor,
        action="position.execution_applied",
        resource_type="position",
        resource_id=move.position.id,
        before=move.before,
        after=move.after,
    )


@dataclass(frozen=True, slots=True)
class AccountPnl:
    """One account's P&L in one currency: realised today, the mark of its open positions."""

    account_id: UUID
    currency: str
    realized: Decimal
    unrealized: Decimal
    realized_total: Decimal
    open_positions: int
    unpriced_positions: int


def account_pnl(*, positions: list[Position], prices: dict[str, LastPrice], day: date) -> list[AccountPnl]:
    """Sum positions into per-account, per-currency P&L of `day` (pure over the rows given)."""
    totals: dict[tuple[UUID, str], dict[str, Any]] = defaultdict(
        lambda: {"realized": Decimal(0), "unrealized": Decimal(0), "total": Decimal(0), "open": 0, "unpriced": 0}
    )
    for position in positions:
        entry = totals[(position.account_id, position.currency)]
        if position.realized_day == day:
            entry["realized"] += position.realized_today
        entry["total"] += position.realized_pnl
        if position.quantity:
            entry["open"] += 1
            price = prices.get(str(position.instrument_id))
            if price is None:
                entry["unpriced"] += 1
            else:
                mark = pnl.unrealized(as_pure(position), last=price.last, multiplier=position.instrument.multiplier)
                entry["unrealized"] += mark
    return [
        AccountPnl(
            account_id=account_id,
            currency=currency,
            realized=money(entry["realized"]),
            unrealized=money(entry["unrealized"]),
            realized_total=money(entry["total"]),
            open_positions=entry["open"],
            unpriced_positions=entry["unpriced"],
        )
        for (account_id, currency), entry in sorted(totals.items(), key=lambda item: (str(item[0][0]), item[0][1]))
    ]


def snapshot_to_dict(snapshot: PnlSnapshot) -> dict[str, Any]:
    return {
        "account_id": str(snapshot.account_id),
        "date": snapshot.day.isoformat(),
        "currency": snapshot.currency,
        "realized_pnl": dec(snapshot.realized_pnl),
        "unrealized_pnl": dec(snapshot.unrealized_pnl),
        "total_pnl": dec(snapshot.realized_pnl + snapshot.unrealized_pnl),
        "realized_total": dec(snapshot.realized_total),
        "open_positions": snapshot.open_positions,
        "unpriced_positions": snapshot.unpriced_positions,
    }


@transaction.atomic(durable=True)
def pnl_snapshot_record(*, tenant_id: UUID, day: date, figures: AccountPnl) -> PnlSnapshot:
    """Record (or refresh) one account's snapshot of `day`, with its event and audit row."""
    now = timezone.now()
    values = {
        "tenant_id": tenant_id,
        "realized_pnl": figures.realized,
        "unrealized_pnl": figures.unrealized,
        "realized_total": figures.realized_total,
        "open_positions": figures.open_positions,
        "unpriced_positions": figures.unpriced_positions,
        "updated_at": now,
    }
    snapshot, created = PnlSnapshot.objects.update_or_create(
        account_id=figures.account_id,
        day=day,
        currency=figures.currency,
        defaults=values,
        create_defaults={**values, "created_at": now},
    )
    body = snapshot_to_dict(snapshot)
    outbox_emit(
        tenant_id=tenant_id,
        stream=POSITIONS,
        kind="pnl.snapshot.created" if created else "pnl.snapshot.updated",
        aggregate_type="pnl_snapshot",
        aggregate_id=snapshot.id,
        payload=body,
    )
    audit_record(
        tenant_id=tenant_id,
        actor=SYSTEM,
        action="pnl.snapshot",
        resource_type="pnl_snapshot",
        resource_id=snapshot.id,
        after=body,
    )
    return snapshot


def pnl_snapshot_take(*, day: date | None = None) -> int:
    """Snapshot every account holding positions for `day` (today, UTC); return how many were written.

    Run it near the end of the day: realised figures are those of positions whose last realisation
    was on `day`. Prices are read before any transaction opens.
    """
    day = day or timezone.now().astimezone(UTC).date()
    positions = list(Position.objects.select_related("instrument").order_by("tenant_id", "account_id"))
    prices = last_prices(client=get_redis(), instrument_ids=[p.instrument_id for p in positions if p.quantity])
    tenants = {position.account_id: position.tenant_id for position in positions}
    written = 0
    for figures in account_pnl(positions=positions, prices=prices, day=day):
        pnl_snapshot_record(tenant_id=tenants[figures.account_id], day=day, figures=figures)
        written += 1
    return written
