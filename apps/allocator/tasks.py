"""Celery tasks of the allocator (queue `allocator`, see oms/celery.py's routes)."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from apps.allocator import runner, services
from apps.allocator.dispatch import RUN_TASK


@shared_task(
    name=RUN_TASK,
    acks_late=True,  # a worker that dies mid-job leaves the message to be delivered again
    reject_on_worker_lost=True,
    soft_time_limit=settings.ALLOCATOR_JOB_TIMEOUT_SECONDS,
    time_limit=settings.ALLOCATOR_JOB_TIMEOUT_SECONDS + 30,
)
def allocator_job_run_task(envelope: dict[str, Any]) -> str:
    """Run one job from its signed envelope (idempotent: only a QUEUED job is claimed)."""
    return runner.allocator_job_run(envelope=envelope)


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def allocator_jobs_reap_task() -> dict[str, int]:
    """Requeue or fail jobs whose worker died, and fail jobs no worker ever picked up."""
    return services.allocator_jobs_reap(now=timezone.now())
