"""Allocator jobs and each tenant's capital-market assumption overrides."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.allocator.state import JobState
from apps.allocator.storage import get_report_storage
from apps.tenants.models import Tenant


def report_path(instance: AllocatorJob, filename: str) -> str:
    # One folder per tenant: a storage listing (or an S3 bucket policy) can follow tenancy.
    return f"allocator/{instance.tenant_id}/{instance.id}.pptx"


class AllocatorJob(models.Model):
    """One household optimisation: its request, progress, outcome and report.

    The idempotency key is a digest of the request's meaning (`services.canonical_request`),
    unique per tenant among the jobs that did not fail or get canceled: submitting the same
    household again returns the job already made, while a failed or canceled one may be retried.
    """

    State = models.TextChoices("State", [(state.value, state.value) for state in JobState])

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="allocator_jobs")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    state = models.CharField(max_length=16, choices=State.choices, default=JobState.QUEUED.value)
    progress = models.FloatField(default=0.0, help_text="percent done, 0 to 100")
    stage = models.CharField(max_length=32, default="queued")
    payload = models.JSONField(help_text="the request body as validated")
    idempotency_key = models.CharField(max_length=64)
    # The assumptions in force when the job was submitted (defaults + the tenant's overrides):
    # a later change of the overrides does not change what a queued job computes.
    assumptions = models.JSONField()
    summary = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="why it failed, in plain words")
    report = models.FileField(upload_to=report_path, storage=get_report_storage, max_length=255, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # While RUNNING: when the reaper may conclude the worker died (see services.allocator_jobs_reap).
    deadline = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [
            models.Index(fields=["tenant", "-created_at", "-id"], name="allocjob_tenant_created"),
            models.Index(fields=["state", "deadline"], name="allocjob_state_deadline"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"],
                condition=~Q(state__in=[JobState.FAILED.value, JobState.CANCELED.value]),
                name="allocjob_live_idempotency_key",
            ),
            models.CheckConstraint(
                condition=Q(state__in=[state.value for state in JobState]), name="allocjob_state_valid"
            ),
            models.CheckConstraint(condition=Q(progress__gte=0) & Q(progress__lte=100), name="allocjob_progress_pct"),
        ]

    def __str__(self) -> str:
        return f"allocator job {self.id} ({self.state})"

    @property
    def has_report(self) -> bool:
        return bool(self.report.name)

    def snapshot(self) -> dict[str, Any]:
        """The fields an audit row records before and after a change."""
        return {
            "state": self.state,
            "progress": self.progress,
            "stage": self.stage,
            "attempts": self.attempts,
            "error": self.error,
            "report": self.report.name or None,
        }


class AllocatorAssumptionOverride(models.Model):
    """A tenant's changes to the default capital-market assumptions (`config/allocator/`).

    `overrides` has the shape that `assumptions.apply_overrides` takes and was validated with it
    (the resulting correlation matrix is positive semi-definite) before it was stored.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="allocator_assumptions")
    overrides = models.JSONField(default=dict, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"allocator assumptions of {self.tenant_id}"
