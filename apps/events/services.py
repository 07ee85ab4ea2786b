"""Write to the outbox inside the caller's transaction.

`outbox_emit` adds a row, and the transaction's commit is followed by one `NOTIFY` (none on
rollback), so the relay wakes exactly when there is a committed row to publish, with no polling
delay.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.utils import timezone

from apps.common.context import current_trace_id
from apps.events.models import OutboxEvent

NOTIFY_CHANNEL = "oms_outbox"


def outbox_emit(
    *,
    tenant_id: UUID | None,
    stream: str,
    kind: str,
    payload: Mapping[str, Any],
    aggregate_type: str = "",
    aggregate_id: Any = "",
) -> OutboxEvent:
    """Record one domain event for publication on `stream`; call it inside the change's transaction."""
    event = outbox_event(
        tenant_id=tenant_id,
        stream=stream,
        kind=kind,
        payload=payload,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
    )
    pending = _pending.get()
    if pending is not None:
        pending.append(event)
        return event
    event.save(force_insert=True)
    relay_wake()
    return event


_pending: ContextVar[list[OutboxEvent] | None] = ContextVar("outbox_pending", default=None)


@contextmanager
def outbox_batch() -> Iterator[None]:
    """Collect the outbox rows `outbox_emit` records in the block and insert them at its end, in
    order, with one INSERT and one NOTIFY (same transaction). For a block that commits or rolls
    back as a whole: a savepoint rolled back inside it would not take its rows back."""
    pending: list[OutboxEvent] = []
    token = _pending.set(pending)
    try:
        yield
    finally:
        _pending.reset(token)
    outbox_emit_many(pending)


def outbox_event(
    *,
    tenant_id: UUID | None,
    stream: str,
    kind: str,
    payload: Mapping[str, Any],
    aggregate_type: str = "",
    aggregate_id: Any = "",
) -> OutboxEvent:
    """An unsaved outbox row, for `outbox_emit_many`."""
    return OutboxEvent(
        tenant_id=tenant_id,
        stream=stream,
        kind=kind,
        aggregate_type=aggregate_type,
        aggregate_id=str(aggregate_id or ""),
        payload=dict(payload),
        trace_id=current_trace_id(),
        created_at=timezone.now(),
    )


def outbox_emit_many(events: list[OutboxEvent]) -> None:
    """Record several domain events with one INSERT and one `NOTIFY` (inside the change's transaction)."""
    if not events:
        return
    OutboxEvent.objects.bulk_create(events)
    relay_wake()


def relay_wake() -> None:
    """Wake the relay once the rows are committed: one `NOTIFY` after the commit of the transaction
    (registered once per transaction, dropped with it on rollback), sent in autocommit.

    Not inside the transaction: PostgreSQL serialises the commits of every transaction that
    notified (a database-wide lock from the queue insert until the commit, WAL flush included),
    which made every placement's commit, under its account lock, wait for the applier's and the
    other placements'. A process that dies between the commit and the `NOTIFY` leaves the rows to
    the relay's safety sweep (seconds), nothing is lost.
    """
    if not connection.in_atomic_block:
        _send_notify()
    elif not any(callback[1] is _send_notify for callback in connection.run_on_commit):
        transaction.on_commit(_send_notify, robust=True)


def _send_notify() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])
