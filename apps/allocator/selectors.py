"""Reads of allocator jobs and assumptions, always scoped to one tenant."""

from __future__ import annotations

from functools import cache
from uuid import UUID

from django.db.models import QuerySet

from apps.allocator.assumptions import Assumptions, apply_overrides, load_assumptions
from apps.allocator.models import AllocatorAssumptionOverride, AllocatorJob
from apps.allocator.state import JobState
from apps.common.errors import NotFound, StateConflict
from apps.common.queries import one_or_not_found
from apps.tenants.models import Tenant


def allocator_job_list(*, tenant: Tenant, state: JobState | None = None) -> QuerySet[AllocatorJob]:
    """The tenant's jobs (newest first once paginated), optionally in one state."""
    jobs = AllocatorJob.objects.filter(tenant=tenant)
    return jobs if state is None else jobs.filter(state=state.value)


def allocator_job_get(*, tenant: Tenant, job_id: UUID) -> AllocatorJob:
    return one_or_not_found(allocator_job_list(tenant=tenant), f"Allocator job {job_id} not found", id=job_id)


def allocator_job_get_for_update(*, tenant: Tenant, job_id: UUID) -> AllocatorJob:
    """The job, row-locked until the caller's transaction ends (call inside one)."""
    return one_or_not_found(
        allocator_job_list(tenant=tenant).select_for_update(), f"Allocator job {job_id} not found", id=job_id
    )


def allocator_job_with_report(*, tenant: Tenant, job_id: UUID) -> AllocatorJob:
    """A job whose report can be downloaded; 409 while it has none."""
    job = allocator_job_get(tenant=tenant, job_id=job_id)
    if job.state != JobState.SUCCEEDED or not job.has_report:
        raise StateConflict(
            f"Job {job_id} is {job.state}; its report exists once it has SUCCEEDED",
            details={"state": job.state},
            hint="Poll GET /allocator/jobs/{id} until state is SUCCEEDED",
        )
    return job


def allocator_report_job(*, tenant_id: UUID, job_id: UUID) -> AllocatorJob:
    """The job a verified download link names (the link carries the tenant, not a session)."""
    job = AllocatorJob.objects.filter(tenant_id=tenant_id, id=job_id).first()
    if job is None or not job.has_report:
        raise NotFound("The report of this link no longer exists")
    return job


@cache
def default_assumptions() -> Assumptions:
    """The defaults of `config/allocator/assumptions.yaml`, read once per process."""
    return load_assumptions()


def allocator_overrides_get(*, tenant: Tenant) -> AllocatorAssumptionOverride | None:
    return AllocatorAssumptionOverride.objects.filter(tenant=tenant).first()


def allocator_assumptions_effective(*, tenant: Tenant) -> Assumptions:
    """The defaults with the tenant's overrides applied (validated when they were stored)."""
    row = allocator_overrides_get(tenant=tenant)
    return apply_overrides(default_assumptions(), row.overrides if row else None)
