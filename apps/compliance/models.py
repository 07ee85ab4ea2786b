"""Compliance tables: a tenant's rules and its restricted lists."""

from __future__ import annotations

import uuid

from django.db import models

from apps.compliance.rules import RestrictionKind, RuleKind
from apps.tenants.models import Tenant


class ComplianceRule(models.Model):
    """One rule of a tenant (one per kind): trading hours, restricted hours or the wash-trade rule.

    `params` are validated by `apps.compliance.rules.parse_params`; `version` grows on every change.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20, choices=[(k.value, k.value) for k in RuleKind])
    name = models.CharField(max_length=100, blank=True)
    params = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            # Several restricted-hours windows may coexist; the other kinds are one switch each.
            models.UniqueConstraint(
                fields=["tenant", "kind"],
                condition=~models.Q(kind=RuleKind.RESTRICTED_HOURS.value),
                name="compliancerule_one_per_kind",
            )
        ]
        indexes = [models.Index(fields=["tenant", "-created_at", "-id"], name="compliancerule_tenant_created")]

    def __str__(self) -> str:
        return f"{self.kind} v{self.version}"


class RestrictedEntry(models.Model):
    """A restricted symbol (upper case) or account (its id), with a reason and a validity window."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=8, choices=[(k.value, k.value) for k in RestrictionKind])
    value = models.CharField(max_length=64)
    reason = models.CharField(max_length=500)
    valid_from = models.DateTimeField(null=True, blank=True)
    valid_until = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "kind", "value"], name="restricted_tenant_kind_value_unique")
        ]
        indexes = [models.Index(fields=["tenant", "-created_at", "-id"], name="restricted_tenant_created")]

    def __str__(self) -> str:
        return f"{self.kind} {self.value}"
