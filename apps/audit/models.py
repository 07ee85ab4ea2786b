"""The audit log: who changed what, when, from where, under which trace.

Rows are append-only (a database trigger refuses UPDATE and DELETE) and tamper-evident: each
tenant's rows form a hash chain, and `AuditChainHead` holds the chain's last hash, so an edit, a
deletion in the middle or a deletion at the end is found by `audit_verify`. Rows are inserted
unsealed (`position` 0, empty hashes) and chained after commit by `audit_seal`.
"""

from __future__ import annotations

import uuid

from django.db import models

NIL_CHAIN = uuid.UUID(int=0)  # the chain of entries that belong to no tenant (e.g. a failed login)
UNSEALED = 0  # the `position` of an entry not chained yet (see apps.audit.services.audit_seal)
SEQUENCE = "audit_auditlog_seq"


class AuditLog(models.Model):
    """One audited action. Partitioned by month on `created_at` (see the migration).

    `seq` numbers entries in insertion order (one database sequence for all tenants, so a tenant's
    numbers have gaps); `position` is the entry's place in its tenant's hash chain (1, 2, 3, ...),
    given by the sealer after commit, 0 until then.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant_id = models.UUIDField(null=True, blank=True, db_index=False)
    seq = models.BigIntegerField(db_default=models.Func(models.Value(SEQUENCE), function="nextval"))
    position = models.BigIntegerField(default=UNSEALED)
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
            models.Index(fields=["tenant_id", "position"], name="audit_tenant_position"),
            models.Index(fields=["tenant_id", "-created_at"], name="audit_tenant_created"),
            # What the sealer reads: only the entries not chained yet.
            models.Index(fields=["seq"], name="audit_unsealed", condition=models.Q(position=UNSEALED)),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.resource_type}:{self.resource_id} by {self.actor_label}"


class AuditChainHead(models.Model):
    """The end of one tenant's chain; only the sealer (and the retention anchor) writes it."""

    chain = models.UUIDField(primary_key=True)
    seq = models.BigIntegerField(default=0)  # the `position` of the chain's last entry
    hash = models.CharField(max_length=64, default="0" * 64)
    # Where verification starts once old partitions have been dropped by retention.
    anchor_seq = models.BigIntegerField(default=0)
    anchor_hash = models.CharField(max_length=64, default="0" * 64)

    def __str__(self) -> str:
        return f"chain {self.chain} at {self.seq}"
