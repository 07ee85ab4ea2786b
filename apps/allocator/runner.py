"""What a worker does with a job: verify, claim, optimise, report, finish.

The database is the job's source of truth; the queue message only says "look at job X". A
worker claims a QUEUED job by moving it to RUNNING (row lock, one transaction), so a message
delivered twice (acks_late after a worker died) runs the job once. The claim records the
attempt number; every later write is conditional on the job still being RUNNING with that
attempt, so a canceled job, or one the reaper has handed to another worker, is left alone.
No lock is held while computing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import sentry_sdk
import structlog
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from apps.allocator.assumptions import Assumptions, apply_overrides
from apps.allocator.dispatch import ENVELOPE_KIND, signing_key
from apps.allocator.envelope import EnvelopeRejected, canonical_json, envelope_verify
from apps.allocator.household import AllocationRequest, parse_request
from apps.allocator.models import AllocatorJob
from apps.allocator.optimizer import Canceled, optimize
from apps.allocator.report import build_report
from apps.allocator.selectors import default_assumptions
from apps.allocator.services import job_transition
from apps.allocator.state import JobState
from apps.allocator.storage import report_storage
from apps.common.context import Actor

log = structlog.get_logger(__name__)

WORKER = Actor.system("allocator-worker")
# Progress is written at most this often (plus at every stage change), cancellation read at
# most this often: a 10,000-path job makes ~30 chunks a second across two threads.
PROGRESS_INTERVAL_SECONDS = 1.0
CANCEL_POLL_SECONDS = 0.5
# The reaper waits this long past the time limit before concluding the worker died.
DEADLINE_GRACE_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Claim:
    job: AllocatorJob
    attempt: int
    request: AllocationRequest
    assumptions: Assumptions


def allocator_job_run(*, envelope: Any) -> str:
    """Run the job an envelope names; return the outcome (for the task's result and logs)."""
    try:
        body = envelope_verify(envelope, kind=ENVELOPE_KIND, key=signing_key())
        job_id = UUID(str(body["job_id"]))
    except (EnvelopeRejected, KeyError, ValueError) as exc:
        # Not from our API (or tampered with on the way): never act on it, not even to fail a job.
        log.error("allocator.envelope_rejected", reason=str(exc))
        return "rejected"
    claim = _claim(job_id=job_id, body=body)
    if claim is None:
        return "skipped"
    log.info("allocator.job_started", job_id=str(job_id), attempt=claim.attempt)
    tracker = _Tracker(job_id=job_id, attempt=claim.attempt)
    try:
        result = optimize(
            claim.request.household,
            claim.request.params,
            claim.assumptions,
            on_progress=tracker.progress,
            should_cancel=tracker.should_cancel,
            # Celery's prefork children are daemonic and may not start processes; numpy releases
            # the GIL in its loops, so threads use the cores as well.
            executor="thread",
        )
        tracker.progress(97.0, "report", force=True)
        deck = build_report(result, claim.request.household, claim.assumptions)
        claim.job.report.save(f"{job_id}.pptx", ContentFile(deck), save=False)
    except Canceled:
        log.info("allocator.job_stopped", job_id=str(job_id))
        return "canceled"
    except SoftTimeLimitExceeded:
        minutes = settings.ALLOCATOR_JOB_TIMEOUT_SECONDS // 60
        return _fail(
            claim,
            f"The optimisation did not finish within the {minutes}-minute limit. Submit it again with fewer "
            "simulations (n_sims), a coarser grid (a larger grid_step) or more workers (n_jobs).",
        )
    except Exception as exc:
        log.exception("allocator.job_crashed", job_id=str(job_id))
        sentry_sdk.capture_exception(exc)
        return _fail(
            claim,
            f"The optimisation stopped on an internal error ({type(exc).__name__}). It has been logged; "
            f"submit the job again, and quote job {job_id} if it keeps failing.",
        )
    return _finish(claim, summary=result.summary(), report_name=claim.job.report.name)


@transaction.atomic(durable=True)
def _claim(*, job_id: UUID, body: dict[str, Any]) -> Claim | None:
    job = AllocatorJob.objects.select_for_update().filter(id=job_id).first()
    if job is None:
        log.warning("allocator.job_missing", job_id=str(job_id))
        return None
    if job.state != JobState.QUEUED:
        # A second delivery of the message, or a job canceled while it waited in the queue.
        log.info("allocator.job_not_queued", job_id=str(job_id), state=job.state)
        return None
    # Signed by our API, but the row is the truth: never compute anything but what it says.
    if str(body.get("tenant_id")) != str(job.tenant_id) or canonical_json(body.get("payload")) != canonical_json(
        job.payload
    ):
        log.error("allocator.envelope_mismatch", job_id=str(job_id))
        return None
    request = parse_request(job.payload)
    assumptions = apply_overrides(default_assumptions(), job.assumptions)
    now = timezone.now()
    job_transition(
        job,
        JobState.RUNNING,
        actor=WORKER,
        action="allocator_job.started",
        attempts=job.attempts + 1,
        started_at=now,
        deadline=now + timedelta(seconds=settings.ALLOCATOR_JOB_TIMEOUT_SECONDS + DEADLINE_GRACE_SECONDS),
        progress=0.0,
        stage="starting",
        error="",
    )
    return Claim(job=job, attempt=job.attempts, request=request, assumptions=assumptions)


class _Tracker:
    """Throttled progress writes and cancellation polls for one attempt of one job."""

    def __init__(self, *, job_id: UUID, attempt: int) -> None:
        self.job_id, self.attempt = job_id, attempt
        self.stage = ""
        self.last_write = self.last_poll = float("-inf")
        self.stopped = False

    def _mine(self) -> Any:
        return AllocatorJob.objects.filter(id=self.job_id, state=JobState.RUNNING.value, attempts=self.attempt)

    def progress(self, percent: float, stage: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and stage == self.stage and now - self.last_write < PROGRESS_INTERVAL_SECONDS:
            return
        self.stage, self.last_write = stage, now
        updated = self._mine().update(progress=min(100.0, max(0.0, percent)), stage=stage, updated_at=timezone.now())
        if not updated:
            self.stopped = True  # canceled, or handed to another worker by the reaper

    def should_cancel(self) -> bool:
        now = time.monotonic()
        if not self.stopped and now - self.last_poll >= CANCEL_POLL_SECONDS:
            self.last_poll = now
            self.stopped = not self._mine().exists()
        return self.stopped


@transaction.atomic(durable=True)
def _finish(claim: Claim, *, summary: dict[str, Any], report_name: str) -> str:
    job = AllocatorJob.objects.select_for_update().get(id=claim.job.id)
    if job.state != JobState.RUNNING or job.attempts != claim.attempt:
        # Canceled in the last moments (or reaped): the work is discarded, the file too.
        transaction.on_commit(lambda: report_storage.delete(report_name))
        return "discarded"
    job_transition(
        job,
        JobState.SUCCEEDED,
        actor=WORKER,
        action="allocator_job.succeeded",
        summary=summary,
        report=report_name,
        progress=100.0,
        stage="done",
        finished_at=timezone.now(),
        deadline=None,
    )
    log.info("allocator.job_succeeded", job_id=str(job.id))
    return "succeeded"


@transaction.atomic(durable=True)
def _fail(claim: Claim, message: str) -> str:
    job = AllocatorJob.objects.select_for_update().get(id=claim.job.id)
    if job.state != JobState.RUNNING or job.attempts != claim.attempt:
        return "discarded"
    job_transition(
        job,
        JobState.FAILED,
        actor=WORKER,
        action="allocator_job.failed",
        error=message,
        stage="failed",
        finished_at=timezone.now(),
        deadline=None,
    )
    log.warning("allocator.job_failed", job_id=str(job.id), error=message)
    return "failed"
