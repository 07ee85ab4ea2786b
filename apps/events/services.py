"""Write to the outbox inside the caller's transaction.

`outbox_emit` adds a row and a `NOTIFY`; PostgreSQL delivers the notification only when the
transaction commits (and drops it on rollback), so the relay wakes exactly when there is a
committed row to publish, with no polling delay.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from django.db import connection
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
    event = OutboxEvent.objects.create(
        tenant_id=tenant_id,
        stream=stream,
        kind=kind,
        aggregate_type=aggregate_type,
        aggregate_id=str(aggregate_id or ""),
        payload=dict(payload),
        trace_id=current_trace_id(),
        created_at=timezone.now(),
    )
    with connection.cursor() as cursor:
        # Identical notifications in one transaction are folded into one by PostgreSQL.
        cursor.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])
    return event
