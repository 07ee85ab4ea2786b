"""The audit log: who changed what, when, from where, under which trace.

Rows are append-only (a database trigger refuses UPDATE and DELETE) and tamper-evident: each
tenant's rows form a hash chain, and `AuditChainHead` holds the chain's last hash, so an edit, a
deletion in the middle or a deletion at the end is found by `audit_verify`.
"""

from __future__ import annotations

import uuid

from django.db import models

NIL_CHAIN = uuid.UUID(int=0)  # the chain of entries that belong to no tenant (e.g. a failed login)


class AuditLog(models.Model):
    """One audited action. Partitioned by month on `created_at` (see the migration)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant_id = models.UUIDField(null=True, blank=True, db_index=False)
    seq = models.BigIntegerField()
    created_at = models.DateTimeField()
    actor_kind = models.CharField(max_length=16)
    actor_label = models.CharField(max_length=255)
    actor_user_id = models.UUIDField(null=True, blank=True)
    actor_api_key_id = models.UUIDField(null=True, blank=True)
    action = models.CharField(max_length=100)
    resource_type = models.CharField(max_length=100)
    resource_id = models.CharField(max_length=255, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    trace_id = models.CharField(max_length=64, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        managed = True
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant_id", "seq"], name="audit_tenant_seq"),
            models.Index(fields=["tenant_id", "-created_at"], name="audit_tenant_created"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.resource_type}:{self.resource_id} by {self.actor_label}"


class AuditChainHead(models.Model):
    """The end of one tenant's chain; the row lock on it serialises appends."""

    chain = models.UUIDField(primary_key=True)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default="0" * 64)
    # Where verification starts once old partitions have been dropped by retention.
    anchor_seq = models.BigIntegerField(default=0)
    anchor_hash = models.CharField(max_length=64, default="0" * 64)

    def __str__(self) -> str:
        return f"chain {self.chain} at {self.seq}"
