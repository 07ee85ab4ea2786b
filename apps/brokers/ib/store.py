"""The gateway's persistence: the process lock, order-id leases, tickets, the execution journal,
account status, and reconciliation runs. Synchronous Django code, called from the gateway's one
database thread (never from its event loop), each call a short transaction: no row lock is ever
held while the gateway waits on IB.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Max, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from apps.brokers import services
from apps.brokers.ib import reconcile
from apps.brokers.ib.mapping import OrderSpec
from apps.brokers.ib.models import (
    TICKET_TERMINAL,
    ExecutionRecord,
    OrderIdLease,
    OrderTicket,
    ReconciliationDrift,
    ReconciliationRun,
    RunStatus,
    RunTrigger,
    TicketStatus,
)
from apps.brokers.models import BrokerAccount, ConnectionStatus, Instrument
from apps.common.context import Actor
from apps.events.services import outbox_emit_many, outbox_event

GATEWAY = Actor.system("ib gateway")
STREAM = "ev.brokers"


class GatewayLocked(RuntimeError):
    """Another gateway process holds this (login, client id)."""


def _lock_key(login: str, client_id: int) -> int:
    digest = hashlib.sha256(f"ib-gateway:{login}:{client_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class GatewayLock:
    """A PostgreSQL session advisory lock on (login, client id), on a connection of its own.

    IB lets only one API session use a client id; two gateway processes sharing one would lease
    order ids from one high-water mark but see each other's callbacks as unknown. The lock lives
    as long as its connection: a killed process loses it the moment its socket closes, so a
    restart never waits for a stale lease to expire.
    """

    def __init__(self, login: str, client_id: int) -> None:
        self.login, self.client_id = login, client_id
        self._connection: psycopg.Connection[Any] | None = None

    def acquire(self) -> None:
        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        conn = psycopg.connect(**params, autocommit=True)
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", [_lock_key(self.login, self.client_id)]).fetchone()
        if not row or not row[0]:
            conn.close()
            raise GatewayLocked(
                f"another gateway process holds IB login {self.login} client id {self.client_id}; "
                "two processes must never share a client id"
            )
        self._connection = conn

    def held(self) -> bool:
        """Whether the lock's connection is still alive (the lock with it)."""
        conn = self._connection
        if conn is None or conn.closed:
            return False
        try:
            conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def release(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@transaction.atomic
def order_id_lease(*, login: str, client_id: int, next_valid_id: int) -> int:
    """Lease one order id: above IB's hint and above every id this (login, client id) ever used.

    One `UPDATE … RETURNING` (the row lock serialises concurrent leases); the row is created the
    first time.
    """
    table = OrderIdLease._meta.db_table
    sql = (
        f'UPDATE "{table}" SET "high_water" = GREATEST("high_water", %s - 1) + 1, "updated_at" = %s '  # noqa: S608
        'WHERE "login" = %s AND "client_id" = %s RETURNING "high_water"'
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [next_valid_id, timezone.now(), login, client_id])
        row = cursor.fetchone()
        if row is None:
            OrderIdLease.objects.get_or_create(login=login, client_id=client_id)
            cursor.execute(sql, [next_valid_id, timezone.now(), login, client_id])
            row = cursor.fetchone()
    return int(row[0])


@transaction.atomic
def order_id_floor(*, login: str, client_id: int, next_valid_id: int) -> int:
    """Raise the mark to IB's `nextValidId - 1` (never lower it); return the mark."""
    OrderIdLease.objects.get_or_create(login=login, client_id=client_id)
    lease = OrderIdLease.objects.filter(login=login, client_id=client_id)
    lease.update(high_water=Greatest(F("high_water"), next_valid_id - 1), updated_at=timezone.now())
    return int(lease.values_list("high_water", flat=True).get())


def order_id_high_water(*, login: str, client_id: int) -> int:
    found = OrderIdLease.objects.filter(login=login, client_id=client_id).values_list("high_water", flat=True)
    return int(found.first() or 0)


@dataclass(frozen=True, slots=True)
class Ticket:
    """A ticket as the event loop sees it (a frozen copy, never a model instance)."""

    order_id: str
    tenant_id: str
    client_order_id: str
    parent_order_id: str | None
    ib_order_id: int
    perm_id: int | None
    status: str
    pending: str
    con_id: int | None
    symbol: str
    side: str
    quantity: Decimal
    filled: Decimal
    spec: dict[str, Any]
    sends: int
    ib_client_id: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TICKET_TERMINAL


def _frozen(row: OrderTicket) -> Ticket:
    return Ticket(
        order_id=str(row.order_id),
        tenant_id=str(row.tenant_id),
        client_order_id=row.client_order_id,
        parent_order_id=str(row.parent_order_id) if row.parent_order_id else None,
        ib_order_id=row.ib_order_id,
        perm_id=row.perm_id,
        status=row.status,
        pending=row.pending,
        con_id=row.con_id,
        symbol=row.symbol,
        side=row.side,
        quantity=row.quantity,
        filled=row.filled,
        spec=row.spec,
        sends=row.sends,
        ib_client_id=row.ib_client_id,
    )


def tickets_open(
    *, account_id: UUID, login: str, client_id: int, specs: list[tuple[OrderSpec, dict[str, Any]]]
) -> list[Ticket] | None:
    """Lease ids and write SUBMITTING tickets for a new submission, in one transaction.

    Returns None when any of the orders already has a ticket (a resent or replayed command): the
    gateway never sends an order twice on the strength of a command.
    """
    try:
        with transaction.atomic():
            rows = []
            for spec, raw in specs:
                ib_order_id = order_id_lease(login=login, client_id=client_id, next_valid_id=0)
                rows.append(
                    OrderTicket.objects.create(
                        account_id=account_id,
                        tenant_id=UUID(spec.tenant_id),
                        order_id=UUID(spec.order_id),
                        parent_order_id=UUID(spec.parent_id) if spec.parent_id else None,
                        client_order_id=spec.client_order_id,
                        symbol=spec.symbol,
                        con_id=spec.con_id,
                        side=spec.side,
                        quantity=spec.quantity,
                        ib_client_id=client_id,
                        ib_order_id=ib_order_id,
                        spec=raw,
                    )
                )
    except IntegrityError:
        return None
    return [_frozen(row) for row in rows]


def ticket_resend(*, account_id: UUID, order_id: str, login: str, client_id: int) -> Ticket:
    """Give a ticket whose first send never reached IB a fresh order id (never the old one)."""
    with transaction.atomic():
        ib_order_id = order_id_lease(login=login, client_id=client_id, next_valid_id=0)
        OrderTicket.objects.filter(account_id=account_id, order_id=order_id).update(
            ib_order_id=ib_order_id, sends=F("sends") + 1, status=TicketStatus.SUBMITTING, updated_at=timezone.now()
        )
        return _frozen(OrderTicket.objects.get(account_id=account_id, order_id=order_id))


def ticket_list(*, account_id: UUID, open_only: bool = False) -> list[Ticket]:
    rows = OrderTicket.objects.filter(account_id=account_id)
    if open_only:
        rows = rows.exclude(status__in=list(TICKET_TERMINAL))
    return [_frozen(row) for row in rows.order_by("created_at")]


def ticket_get(*, account_id: UUID, order_id: str) -> Ticket | None:
    row = OrderTicket.objects.filter(account_id=account_id, order_id=order_id).first()
    return _frozen(row) if row else None


def ticket_find(
    *, account_id: UUID, client_id: int, ib_order_id: int = 0, perm_id: int = 0, order_ref: str = ""
) -> Ticket | None:
    """The ticket an IB callback is about: by permId, else by (client id, order id), else by orderRef."""
    keys = Q()
    if perm_id:
        keys |= Q(perm_id=perm_id)
    if ib_order_id > 0:
        keys |= Q(ib_client_id=client_id, ib_order_id=ib_order_id)
    if order_ref:
        keys |= Q(client_order_id=order_ref)
    if not keys:
        return None
    # One query for the three keys; the most durable one that matches wins.
    rows = list(OrderTicket.objects.filter(keys, account_id=account_id).order_by("-created_at")[:20])
    found = (
        next((row for row in rows if perm_id and row.perm_id == perm_id), None)
        or next(
            (r for r in rows if ib_order_id > 0 and (r.ib_client_id, r.ib_order_id) == (client_id, ib_order_id)), None
        )
        or next((row for row in rows if order_ref and row.client_order_id == order_ref), None)
    )
    return _frozen(found) if found else None


def ticket_update(*, account_id: UUID, order_id: str, **values: Any) -> None:
    OrderTicket.objects.filter(account_id=account_id, order_id=order_id).update(**values, updated_at=timezone.now())


def execution_booked(*, account_id: UUID, exec_id: str) -> bool:
    return ExecutionRecord.objects.filter(account_id=account_id, exec_id=exec_id).exists()


def execution_record(*, account_id: UUID, execution: reconcile.IbExecution, order_id: str) -> bool:
    """Journal one published execution; False if it was already there."""
    try:
        with transaction.atomic():
            ExecutionRecord.objects.create(
                account_id=account_id,
                exec_id=execution.exec_id,
                order_id=order_id,
                perm_id=execution.perm_id,
                con_id=execution.con_id,
                side=execution.side,
                quantity=execution.quantity,
                price=execution.price,
                commission=execution.commission,
                executed_at=execution.time,
            )
    except IntegrityError:
        return False
    OrderTicket.objects.filter(account_id=account_id, order_id=order_id).update(
        filled=F("filled") + execution.quantity, updated_at=timezone.now()
    )
    return True


def executions_booked_among(*, account_id: UUID, exec_ids: list[str]) -> set[str]:
    """Which of these exec ids are journaled already (one query)."""
    found = ExecutionRecord.objects.filter(account_id=account_id, exec_id__in=exec_ids)
    return set(found.values_list("exec_id", flat=True))


def executions_record_many(*, account_id: UUID, rows: list[tuple[reconcile.IbExecution, str]]) -> int:
    """Journal published executions in bulk (a reconciliation's backfill) and add their quantities
    to their tickets; the caller passes only executions it found unbooked (`executions_booked_among`)."""
    if not rows:
        return 0
    with transaction.atomic():
        records = [
            ExecutionRecord(
                account_id=account_id,
                exec_id=execution.exec_id,
                order_id=UUID(order_id),
                perm_id=execution.perm_id,
                con_id=execution.con_id,
                side=execution.side,
                quantity=execution.quantity,
                price=execution.price,
                commission=execution.commission,
                executed_at=execution.time,
            )
            for execution, order_id in rows
        ]
        # The caller checked which were booked, in this same (only) database thread of the only
        # gateway of the account: what is left is new; ON CONFLICT DO NOTHING guards the rest.
        fresh = records
        ExecutionRecord.objects.bulk_create(fresh, ignore_conflicts=True, batch_size=2000)
        filled: dict[UUID, Decimal] = {}
        for record in fresh:
            filled[record.order_id] = filled.get(record.order_id, Decimal(0)) + record.quantity
        for order_id, quantity in filled.items():
            OrderTicket.objects.filter(account_id=account_id, order_id=order_id).update(
                filled=F("filled") + quantity, updated_at=timezone.now()
            )
    return len(fresh)


def execution_commission(*, account_id: UUID, exec_id: str, commission: Decimal) -> str | None:
    """Record a commission reported after its execution was published; return the order id when
    it changed what was published (so a correction goes out), None when it did not."""
    changed = ExecutionRecord.objects.filter(account_id=account_id, exec_id=exec_id).exclude(commission=commission)
    found = changed.values_list("order_id", flat=True).first()
    if found is None:
        return None
    changed.update(commission=commission)
    return str(found)


def tickets_for_executions(*, account_id: UUID, perm_ids: list[int], refs: list[str]) -> list[Ticket]:
    """The tickets a batch of executions may belong to (by permId or orderRef), in one query."""
    rows = OrderTicket.objects.filter(account_id=account_id).filter(
        Q(perm_id__in=[p for p in perm_ids if p]) | Q(client_order_id__in=[r for r in refs if r])
    )
    return [_frozen(row) for row in rows.order_by("created_at")]


def ticket_adopt(*, account_id: UUID, tenant_id: UUID, order: reconcile.IbOrder, order_id: str, status: str) -> bool:
    """A ticket for an order adopted from IB (placed outside the OMS); False if it had one."""
    _, created = OrderTicket.objects.get_or_create(
        account_id=account_id,
        order_id=UUID(order_id),
        defaults={
            "tenant_id": tenant_id,
            "client_order_id": order.order_ref or f"ib-{order.perm_id}",
            "symbol": order.symbol,
            "con_id": order.con_id,
            "side": order.side,
            "quantity": order.quantity,
            "ib_client_id": order.client_id,
            "ib_order_id": order.order_id,
            "perm_id": order.perm_id,
            "status": status,
            "ib_status": order.status,
            "spec": {"adopted": True, **order.details},
        },
    )
    return created


def instruments_known(*, con_ids: list[int]) -> set[int]:
    """Which of these IB contract ids the OMS has an instrument for (orders on others cannot be adopted)."""
    return set(Instrument.objects.filter(con_id__in=con_ids).values_list("con_id", flat=True))


def execution_cursor(*, account_id: UUID) -> datetime | None:
    """The time of the latest execution journaled (reconciliation asks IB for what came after)."""
    found = ExecutionRecord.objects.filter(account_id=account_id).aggregate(latest=Max("executed_at"))["latest"]
    return found if isinstance(found, datetime) else None


def executions_booked(*, account_id: UUID) -> list[reconcile.OurExecution]:
    rows = ExecutionRecord.objects.filter(account_id=account_id).values_list(
        "exec_id", "con_id", "side", "quantity", "commission", "order_id"
    )
    return [
        reconcile.OurExecution(exec_id, con_id, side, quantity, commission, str(order_id))
        for exec_id, con_id, side, quantity, commission, order_id in rows.iterator(chunk_size=5000)
    ]


def account_status(*, account_id: UUID, status: ConnectionStatus, reason: str) -> None:
    """Report a status change (audited, evented); unchanged status only refreshes the reason."""
    current = BrokerAccount.objects.filter(id=account_id).values_list("status", "status_reason").first()
    if current is not None and current == (status.value, reason[:255]):
        return
    services.broker_account_status_report(account_id=account_id, status=status, reason=reason, actor=GATEWAY)


def account_heartbeat(*, account_id: UUID, reason: str = "connected to IB") -> None:
    """Refresh the heartbeat; an account an operator has just resumed (RECONNECTING, no longer
    halted) is reported CONNECTED again, since the gateway never stopped being connected."""
    if services.broker_account_heartbeat(account_id=account_id):
        return
    row = BrokerAccount.objects.filter(id=account_id).values_list("status", "halted").first()
    if row is not None and row == (ConnectionStatus.RECONNECTING, False):
        account_status(account_id=account_id, status=ConnectionStatus.CONNECTED, reason=reason)


def run_start(*, account_id: UUID, trigger: RunTrigger) -> UUID:
    tenant_id = BrokerAccount.objects.values_list("tenant_id", flat=True).get(id=account_id)
    run = ReconciliationRun.objects.create(
        tenant_id=tenant_id,
        account_id=account_id,
        trigger=trigger,
        status=RunStatus.RUNNING,
        requested_by=GATEWAY.label,
        started_at=timezone.now(),
    )
    return run.id


def run_claim_requested(*, account_id: UUID) -> UUID | None:
    """Claim the oldest manual run requested for the account (a conditional UPDATE: one taker)."""
    candidate = (
        ReconciliationRun.objects.filter(account_id=account_id, status=RunStatus.REQUESTED)
        .order_by("created_at")
        .values_list("id", flat=True)
        .first()
    )
    if candidate is None:
        return None
    claimed = ReconciliationRun.objects.filter(id=candidate, status=RunStatus.REQUESTED).update(
        status=RunStatus.RUNNING, started_at=timezone.now()
    )
    return candidate if claimed else None


def _drift_row(run: ReconciliationRun, drift: reconcile.Drift) -> ReconciliationDrift:
    return ReconciliationDrift(
        run=run,
        kind=drift.kind,
        action=drift.action,
        resolution=drift.resolution[:255],
        order_id=UUID(drift.order_id) if drift.order_id else None,
        client_order_id=drift.client_order_id,
        perm_id=drift.perm_id,
        con_id=drift.con_id,
        ours=drift.ours,
        ib=drift.ib,
    )


@transaction.atomic(durable=True)
def run_finish(*, run_id: UUID, drifts: Iterable[reconcile.Drift], summary: dict[str, Any], error: str = "") -> None:
    """Close a run with its drifts; each drift about an order is an `OrderStateSync` event."""
    run = ReconciliationRun.objects.select_for_update().get(id=run_id)
    rows = ReconciliationDrift.objects.bulk_create([_drift_row(run, drift) for drift in drifts], batch_size=2000)
    events = [
        outbox_event(
            tenant_id=run.tenant_id,
            stream=STREAM,
            kind="OrderStateSync",
            aggregate_type="order" if row.order_id else "broker_account",
            aggregate_id=row.order_id or run.account_id,
            payload={
                "run_id": str(run.id),
                "account_id": str(run.account_id),
                "drift": row.kind,
                "action": row.action,
                "resolution": row.resolution,
                "order_id": str(row.order_id) if row.order_id else None,
                "client_order_id": row.client_order_id,
                "perm_id": row.perm_id,
                "ours": row.ours,
                "ib": row.ib,
            },
        )
        for row in rows
    ]
    for start in range(0, len(events), 2000):  # one INSERT (and one NOTIFY) per 2,000 events
        outbox_emit_many(events[start : start + 2000])
    run.status = RunStatus.FAILED if error else RunStatus.COMPLETED
    run.error = error[:500]
    run.summary = summary | {"drifts": len(rows)}
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "error", "summary", "finished_at"])
