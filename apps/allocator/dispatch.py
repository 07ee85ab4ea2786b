"""Hand a job to the `allocator` queue, signed (spec 000).

Services call `job_enqueue` from `transaction.on_commit`, so a worker never sees a job whose
row is not committed yet. The task is sent by name (routed to the `allocator` queue by
oms/celery.py), so the web process never imports the optimiser and services and tasks do not
import each other.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from celery import current_app
from django.conf import settings

from apps.allocator.envelope import envelope_sign
from apps.allocator.models import AllocatorJob

RUN_TASK = "apps.allocator.tasks.allocator_job_run_task"
ENVELOPE_KIND = "allocator.run"

log = structlog.get_logger(__name__)


def signing_key() -> bytes:
    return str(settings.COMMAND_SIGNING_KEY).encode()


def job_envelope(job: AllocatorJob) -> dict[str, Any]:
    """The signed message a worker needs: which job, whose, and exactly what to compute."""
    body = {"job_id": str(job.id), "tenant_id": str(job.tenant_id), "payload": job.payload}
    return envelope_sign(kind=ENVELOPE_KIND, body=body, key=signing_key(), issued_at=int(time.time()))


def job_enqueue(envelope: dict[str, Any]) -> None:
    """Publish the run task; runs after commit, so a broker outage must not fail the request."""
    try:
        current_app.send_task(RUN_TASK, args=[envelope])
    except Exception:
        # The job is committed and stays QUEUED; the reaper fails it (in plain words) if no
        # worker ever takes it, and the client can submit it again then.
        log.exception("allocator.enqueue_failed", job_id=envelope.get("body", {}).get("job_id"))
