"""The transactional outbox: every domain event, written in the transaction of the change it reports.

The outbox is the durable, replayable log; Redis Streams only carry it in real time. The relay
(`manage.py run_relay`) publishes rows in `seq` order and marks them published; losing Redis
loses nothing because unpublished (and, after a Redis data loss, recent) rows are published again.
Consumers tolerate duplicates: every stream entry carries the outbox row's id.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Func, Value

OUTBOX_SEQUENCE = "events_outboxevent_seq"


class OutboxEvent(models.Model):
    """One domain event waiting for (or done with) publication. Partitioned by month on `created_at`.

    `tenant_id` is a plain UUID, not a foreign key: the events app sits below tenants in the
    layer order, and the outbox must outlive whatever row it reports on.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # A database sequence, so the relay publishes in insertion order without a second query.
    seq = models.BigIntegerField(
        db_default=Func(Value(OUTBOX_SEQUENCE), function="nextval", output_field=models.BigIntegerField()),
        editable=False,
    )
    tenant_id = models.UUIDField(null=True, blank=True)
    stream = models.CharField(max_length=64)
    kind = models.CharField(max_length=64)
    aggregate_type = models.CharField(max_length=64, blank=True)
    aggregate_id = models.CharField(max_length=64, blank=True)
    payload = models.JSONField(default=dict)
    trace_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField()
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The relay's scan: unpublished rows in sequence order.
            models.Index(fields=["seq"], name="outbox_unpublished", condition=models.Q(published_at__isnull=True)),
            models.Index(fields=["tenant_id", "-created_at"], name="outbox_tenant_created"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.seq} → {self.stream}"
