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
from django.db.models import F, Max
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
from apps.brokers.models import BrokerAccount, ConnectionStatus
from apps.common.context import Actor
from apps.events.services import outbox_emit

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
    """Lease one order id: above IB's hint and above every id this (login, client id) ever used."""
    OrderIdLease.objects.get_or_create(login=login, client_id=client_id)
    lease = OrderIdLease.objects.filter(login=login, client_id=client_id)
    lease.update(high_water=Greatest(F("high_water"), next_valid_id - 1) + 1, updated_at=timezone.now())
    return int(lease.values_list("high_water", flat=True).get())


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
    rows = OrderTicket.objects.filter(account_id=account_id)
    found = rows.filter(perm_id=perm_id).first() if perm_id else None
    if found is None and ib_order_id > 0:
        found = rows.filter(ib_client_id=client_id, ib_order_id=ib_order_id).first()
    if found is None and order_ref:
        found = rows.filter(client_order_id=order_ref).order_by("-created_at").first()
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
                executed_at=execution.time,
            )
    except IntegrityError:
        return False
    OrderTicket.objects.filter(account_id=account_id, order_id=order_id).update(
        filled=F("filled") + execution.quantity, updated_at=timezone.now()
    )
    return True


def execution_cursor(*, account_id: UUID) -> datetime | None:
    """The time of the latest execution journaled (reconciliation asks IB for what came after)."""
    found = ExecutionRecord.objects.filter(account_id=account_id).aggregate(latest=Max("executed_at"))["latest"]
    return found if isinstance(found, datetime) else None


def executions_booked(*, account_id: UUID) -> list[reconcile.OurExecution]:
    rows = ExecutionRecord.objects.filter(account_id=account_id).values_list("exec_id", "con_id", "side", "quantity")
    return [reconcile.OurExecution(exec_id, con_id, side, quantity) for exec_id, con_id, side, quantity in rows]


def account_status(*, account_id: UUID, status: ConnectionStatus, reason: str) -> None:
    """Report a status change (audited, evented); unchanged status only refreshes the reason."""
    current = BrokerAccount.objects.filter(id=account_id).values_list("status", "status_reason").first()
    if current is not None and current == (status.value, reason[:255]):
        return
    services.broker_account_status_report(account_id=account_id, status=status, reason=reason, actor=GATEWAY)


def account_heartbeat(*, account_id: UUID) -> None:
    services.broker_account_heartbeat(account_id=account_id)


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
    rows = ReconciliationDrift.objects.bulk_create([_drift_row(run, drift) for drift in drifts])
    for row in rows:
        outbox_emit(
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
    run.status = RunStatus.FAILED if error else RunStatus.COMPLETED
    run.error = error[:500]
    run.summary = summary | {"drifts": len(rows)}
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "error", "summary", "finished_at"])
