"""Use cases of the allocator seen from the API and the beat: submit, cancel, links, assumptions,
and reaping jobs whose worker died. What a worker does with a job is in `runner`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any
from uuid import UUID

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from apps.allocator import links
from apps.allocator.assumptions import apply_overrides
from apps.allocator.dispatch import job_enqueue, job_envelope
from apps.allocator.envelope import canonical_json
from apps.allocator.household import AllocationRequest, parse_request
from apps.allocator.models import AllocatorAssumptionOverride, AllocatorJob
from apps.allocator.selectors import (
    allocator_assumptions_effective,
    allocator_job_get_for_update,
    allocator_job_with_report,
    default_assumptions,
)
from apps.allocator.state import CANCELABLE, JobState, advance
from apps.audit.services import audit_record
from apps.common.context import Actor
from apps.common.errors import StateConflict
from apps.tenants.models import Tenant, User

log = structlog.get_logger(__name__)

REAPER = Actor.system("allocator-reaper")
_RETRYABLE_STATES = [JobState.FAILED.value, JobState.CANCELED.value]


@dataclasses.dataclass(frozen=True, slots=True)
class Submission:
    job: AllocatorJob
    created: bool  # False: the same request was submitted before and that job is returned


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")  # "500000", "500000.0" and 500000 are one amount
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def request_key(request: AllocationRequest) -> str:
    """Digest of what the request means (after defaults and number formats are normalised)."""
    return hashlib.sha256(canonical_json(_jsonable(dataclasses.asdict(request)))).hexdigest()


def move(job: AllocatorJob, to: JobState, **fields: Any) -> list[str]:
    """The one place a job's state is assigned; returns the fields to save."""
    job.state = advance(job.state, to).value
    for name, value in fields.items():
        setattr(job, name, value)
    return ["state", *fields, "updated_at"]


def job_transition(job: AllocatorJob, to: JobState, *, actor: Actor, action: str, **fields: Any) -> None:
    """Move `job` to `to` with `fields`, save it and audit the change, in the caller's transaction."""
    before = job.snapshot()
    job.save(update_fields=move(job, to, **fields))
    audit_record(
        tenant_id=job.tenant_id,
        actor=actor,
        action=action,
        resource_type="allocator_job",
        resource_id=job.id,
        before=before,
        after=job.snapshot(),
    )


def _live_job(*, tenant: Tenant, key: str) -> AllocatorJob | None:
    return AllocatorJob.objects.filter(tenant=tenant, idempotency_key=key).exclude(state__in=_RETRYABLE_STATES).first()


@transaction.atomic(durable=True)
def allocator_job_submit(*, tenant: Tenant, actor: Actor, user: User | None, payload: Any) -> Submission:
    """Validate a household request and queue it; the same request again returns its job.

    A job that FAILED or was CANCELED does not block a new one with the same request.
    """
    request = parse_request(payload)
    key = request_key(request)
    existing = _live_job(tenant=tenant, key=key)
    if existing is not None:
        return Submission(existing, created=False)
    job = AllocatorJob(
        tenant=tenant,
        created_by=user,
        payload=payload,
        idempotency_key=key,
        assumptions=allocator_assumptions_effective(tenant=tenant).as_dict(),
    )
    try:
        with transaction.atomic():
            job.save(force_insert=True)
    except IntegrityError:
        # The partial unique constraint: an identical request committed in between; return it.
        raced = _live_job(tenant=tenant, key=key)
        if raced is None:
            raise
        return Submission(raced, created=False)
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="allocator_job.submitted",
        resource_type="allocator_job",
        resource_id=job.id,
        after={**job.snapshot(), "idempotency_key": key, "params": payload.get("params") or {}},
    )
    transaction.on_commit(partial(job_enqueue, job_envelope(job)))
    return Submission(job, created=True)


@transaction.atomic(durable=True)
def allocator_job_cancel(*, tenant: Tenant, actor: Actor, job_id: UUID) -> AllocatorJob:
    """Cancel a queued job, or stop a running one at its next chunk; 409 once it has finished."""
    job = allocator_job_get_for_update(tenant=tenant, job_id=job_id)
    if job.state not in CANCELABLE:
        raise StateConflict(
            f"Job {job_id} has already finished ({job.state}); only QUEUED or RUNNING jobs can be canceled",
            details={"state": job.state},
        )
    # The worker polls the row between chunks, sees CANCELED and stops without writing more.
    job_transition(
        job,
        JobState.CANCELED,
        actor=actor,
        action="allocator_job.canceled",
        stage="canceled",
        finished_at=timezone.now(),
        deadline=None,
    )
    return job


@transaction.atomic(durable=True)
def allocator_report_link_issue(*, tenant: Tenant, actor: Actor, job_id: UUID) -> links.ReportLink:
    """Issue an expiring download link for a finished job's report (recorded: it hands out client data)."""
    job = allocator_job_with_report(tenant=tenant, job_id=job_id)
    link = links.report_link(job)
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="allocator_report.link_issued",
        resource_type="allocator_job",
        resource_id=job.id,
        after={"expires_at": link.expires_at, "storage": link.storage},
    )
    return link


@transaction.atomic(durable=True)
def allocator_assumptions_set(
    *, tenant: Tenant, actor: Actor, user: User | None, overrides: dict[str, Any]
) -> AllocatorAssumptionOverride:
    """Replace the tenant's overrides of the default assumptions; `{}` restores the defaults.

    Validated as a whole (422 with field paths), including a positive semi-definite correlation
    matrix. Jobs already submitted keep the assumptions they were submitted with.
    """
    apply_overrides(default_assumptions(), overrides)
    row, _ = AllocatorAssumptionOverride.objects.select_for_update().get_or_create(tenant=tenant)
    before = {"overrides": row.overrides}
    row.overrides = overrides
    row.updated_by = user
    row.save(update_fields=["overrides", "updated_by", "updated_at"])
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="allocator_assumptions.updated",
        resource_type="allocator_assumptions",
        resource_id=row.id,
        before=before,
        after={"overrides": overrides},
    )
    return row


# --- recovery (beat) --------------------------------------------------------------------------


def allocator_jobs_reap(*, now: datetime) -> dict[str, int]:
    """Requeue or fail RUNNING jobs past their deadline; fail QUEUED jobs no worker took.

    Each job is settled in a transaction of its own, so one bad row cannot hold up the rest.
    """
    stuck = AllocatorJob.objects.filter(state=JobState.RUNNING.value, deadline__lt=now).values_list("id", flat=True)
    queued_before = now - timedelta(seconds=settings.ALLOCATOR_QUEUE_TIMEOUT_SECONDS)
    stale = AllocatorJob.objects.filter(state=JobState.QUEUED.value, updated_at__lt=queued_before).values_list(
        "id", flat=True
    )
    counts = {"requeued": 0, "failed": 0, "skipped": 0}
    for job_id in list(stuck):
        counts[_reap_running(job_id=job_id, now=now)] += 1
    for job_id in list(stale):
        counts[_reap_queued(job_id=job_id, queued_before=queued_before)] += 1
    if counts["requeued"] or counts["failed"]:
        log.warning("allocator.jobs_reaped", **counts)
    return counts


def _locked(job_id: UUID, condition: Q) -> AllocatorJob | None:
    return AllocatorJob.objects.select_for_update().filter(condition, id=job_id).first()


@transaction.atomic(durable=True)
def _reap_running(*, job_id: UUID, now: datetime) -> str:
    job = _locked(job_id, Q(state=JobState.RUNNING.value, deadline__lt=now))
    if job is None:  # it finished or was canceled since the scan
        return "skipped"
    if job.attempts < settings.ALLOCATOR_MAX_ATTEMPTS:
        job_transition(
            job,
            JobState.QUEUED,
            actor=REAPER,
            action="allocator_job.requeued",
            stage="requeued",
            progress=0.0,
            deadline=None,
            started_at=None,
        )
        transaction.on_commit(partial(job_enqueue, job_envelope(job)))
        return "requeued"
    minutes = settings.ALLOCATOR_JOB_TIMEOUT_SECONDS // 60
    error = (
        f"The job stopped responding {job.attempts} times: the worker running it was lost or ran past the "
        f"{minutes}-minute limit. Submit it again, perhaps with fewer simulations (n_sims) or a coarser "
        "grid (grid_step); if it keeps failing, ask an operator to check the allocator workers."
    )
    job_transition(
        job,
        JobState.FAILED,
        actor=REAPER,
        action="allocator_job.failed",
        stage="failed",
        error=error,
        finished_at=now,
        deadline=None,
    )
    return "failed"


@transaction.atomic(durable=True)
def _reap_queued(*, job_id: UUID, queued_before: datetime) -> str:
    job = _locked(job_id, Q(state=JobState.QUEUED.value, updated_at__lt=queued_before))
    if job is None:
        return "skipped"
    minutes = settings.ALLOCATOR_QUEUE_TIMEOUT_SECONDS // 60
    error = (
        f"No allocator worker picked the job up within {minutes} minutes, so its queue message was probably lost. "
        "Submit it again; if this repeats, ask an operator to check that allocator workers are running."
    )
    job_transition(
        job,
        JobState.FAILED,
        actor=REAPER,
        action="allocator_job.failed",
        stage="failed",
        error=error,
        finished_at=timezone.now(),
    )
    return "failed"
