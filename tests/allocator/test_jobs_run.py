"""A job run in this process (the worker's code without Celery): outcome, report link, recovery."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from pptx import Presentation
from pptx.enum.shapes import MSO_SHAPE_TYPE

from apps.allocator import runner
from apps.allocator.dispatch import job_envelope
from apps.allocator.models import AllocatorJob
from apps.allocator.services import allocator_jobs_reap
from apps.audit.models import AuditLog
from apps.tenants.scopes import Role
from tests.allocator.jobs import small_body, submit
from tests.conftest import Api, make_member

pytestmark = pytest.mark.django_db


@pytest.fixture
def finished_job(trader, report_dir, django_capture_on_commit_callbacks):
    response, sent = submit(trader, small_body(), django_capture_on_commit_callbacks)
    assert runner.allocator_job_run(envelope=sent[0]) == "succeeded"
    return AllocatorJob.objects.get(id=response.json_body["id"])


def chart_count(deck_bytes: bytes) -> int:
    deck = Presentation(io.BytesIO(deck_bytes))
    return sum(shape.shape_type == MSO_SHAPE_TYPE.PICTURE for slide in deck.slides for shape in slide.shapes)


def test_run_succeeds_with_summary_and_report(finished_job, trader, report_dir):
    job = trader.api.get(f"/allocator/jobs/{finished_job.id}").json_body

    assert job["state"] == "SUCCEEDED"
    assert (job["progress"], job["stage"], job["attempts"], job["error"]) == (100.0, "done", 1, None)
    assert job["has_report"] is True
    assert job["summary"]["n_candidates"] == 35
    assert job["summary"]["n_sims"] == 300
    assert sum(job["summary"]["recommended"]["weights"].values()) == pytest.approx(1.0)
    assert 0 <= job["summary"]["recommended"]["success_probability"] <= 1
    assert (report_dir / "allocator" / str(trader.tenant.id) / f"{finished_job.id}.pptx").exists()
    actions = list(
        AuditLog.objects.filter(resource_id=str(finished_job.id)).order_by("seq").values_list("action", flat=True)
    )
    assert actions == ["allocator_job.submitted", "allocator_job.started", "allocator_job.succeeded"]


def test_report_link_downloads_the_deck_without_credentials(finished_job, trader):
    link = trader.api.get(f"/allocator/jobs/{finished_job.id}/report").json_body

    download = Api().client.get(link["url"])

    assert link["url"].startswith("http://testserver/api/v1/allocator/reports/download?token=")
    assert timezone.now() + timedelta(seconds=590) < timezone.datetime.fromisoformat(link["expires_at"])
    assert download.status_code == 200
    assert download["Content-Type"] == "application/vnd.openxmlformats-officedocument.presentationml.presentation"
    assert (
        download["Content-Disposition"] == f'attachment; filename="allocation-report-{str(finished_job.id)[:8]}.pptx"'
    )
    assert chart_count(b"".join(download.streaming_content)) == 4
    assert AuditLog.objects.filter(action="allocator_report.link_issued", actor_user_id=trader.user.id).count() == 1


def test_expired_link_is_refused(finished_job, trader, monkeypatch):
    issued_at = time.time() - 601
    monkeypatch.setattr("django.core.signing.time.time", lambda: issued_at)
    link = trader.api.get(f"/allocator/jobs/{finished_job.id}/report").json_body
    monkeypatch.undo()

    response = Api().get(link["url"].removeprefix("http://testserver"))

    assert response.status_code == 403
    assert response.json_body["code"] == "PERMISSION_DENIED"
    assert response.json_body["message"] == "This download link has expired"
    assert response.json_body["details"] == {"reason": "expired"}
    assert response.json_body["hint"] == "Ask GET /allocator/jobs/{id}/report for a fresh link"


@pytest.mark.parametrize(
    "tamper", [lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), lambda t: "x" + t, lambda t: "junk"]
)
def test_tampered_link_is_refused(finished_job, trader, tamper):
    url = trader.api.get(f"/allocator/jobs/{finished_job.id}/report").json_body["url"]
    base, token = url.split("token=")

    response = Api().get(f"{base}token={tamper(token)}".removeprefix("http://testserver"))

    assert response.status_code == 403
    assert response.json_body["message"] == "This download link is not valid"
    assert response.json_body["details"] == {"reason": "invalid"}


def test_download_without_a_token_is_a_422(anonymous):
    response = anonymous.get("/allocator/reports/download")

    assert response.status_code == 422
    assert response.json_body["details"] == {"token": ["Field required"]}


def test_a_second_delivery_of_the_message_does_nothing(finished_job):
    before = AllocatorJob.objects.get(id=finished_job.id)

    assert runner.allocator_job_run(envelope=job_envelope(finished_job)) == "skipped"

    after = AllocatorJob.objects.get(id=finished_job.id)
    assert (after.state, after.attempts, after.updated_at) == (before.state, before.attempts, before.updated_at)


def test_forged_envelope_is_not_run(trader, django_capture_on_commit_callbacks):
    _, sent = submit(trader, small_body(), django_capture_on_commit_callbacks)
    forged = {**sent[0], "issued_at": sent[0]["issued_at"] + 1}

    assert runner.allocator_job_run(envelope=forged) == "rejected"
    assert runner.allocator_job_run(envelope={"kind": "allocator.run"}) == "rejected"

    assert AllocatorJob.objects.get().state == "QUEUED"
    assert not AuditLog.objects.filter(action="allocator_job.started").exists()


def test_canceled_job_is_not_run(trader, django_capture_on_commit_callbacks):
    response, sent = submit(trader, small_body(), django_capture_on_commit_callbacks)
    trader.api.post(f"/allocator/jobs/{response.json_body['id']}/cancel")

    assert runner.allocator_job_run(envelope=sent[0]) == "skipped"
    assert AllocatorJob.objects.get().state == "CANCELED"


def test_job_canceled_while_running_stops_between_chunks(
    trader, report_dir, django_capture_on_commit_callbacks, monkeypatch
):
    response, sent = submit(trader, small_body(n_jobs=1), django_capture_on_commit_callbacks)
    job_id = response.json_body["id"]
    original = runner._Tracker.progress

    def progress_then_cancel(self, percent, stage, **kw):
        original(self, percent, stage, **kw)
        if stage == "simulating" and AllocatorJob.objects.get(id=job_id).state == "RUNNING":
            assert trader.api.post(f"/allocator/jobs/{job_id}/cancel").status_code == 200

    monkeypatch.setattr(runner._Tracker, "progress", progress_then_cancel)

    assert runner.allocator_job_run(envelope=sent[0]) == "canceled"

    job = AllocatorJob.objects.get(id=job_id)
    assert (job.state, job.stage, job.report.name, job.summary) == ("CANCELED", "canceled", "", None)
    assert not list(report_dir.rglob("*.pptx"))


def test_crash_fails_the_job_in_plain_words(trader, report_dir, django_capture_on_commit_callbacks, monkeypatch):
    response, sent = submit(trader, small_body(), django_capture_on_commit_callbacks)

    def broken(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(runner, "build_report", broken)

    assert runner.allocator_job_run(envelope=sent[0]) == "failed"

    job = trader.api.get(f"/allocator/jobs/{response.json_body['id']}").json_body
    assert job["state"] == "FAILED"
    assert job["error"] == (
        "The optimisation stopped on an internal error (MemoryError). It has been logged; submit the job again, "
        f"and quote job {job['id']} if it keeps failing."
    )
    # A failed submission may be submitted again.
    again, _ = submit(trader, small_body(), django_capture_on_commit_callbacks)
    assert again.json_body["id"] != job["id"]


def test_reaper_requeues_then_fails_a_job_whose_worker_died(trader, django_capture_on_commit_callbacks, settings):
    settings.ALLOCATOR_MAX_ATTEMPTS = 2
    response, _ = submit(trader, small_body(), django_capture_on_commit_callbacks)
    job_id = response.json_body["id"]
    past = timezone.now() - timedelta(seconds=1)
    AllocatorJob.objects.filter(id=job_id).update(state="RUNNING", attempts=1, deadline=past, stage="simulating")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = allocator_jobs_reap(now=timezone.now())
    requeued = AllocatorJob.objects.get(id=job_id)
    AllocatorJob.objects.filter(id=job_id).update(state="RUNNING", attempts=2, deadline=past)
    second = allocator_jobs_reap(now=timezone.now())

    assert first == {"requeued": 1, "failed": 0, "skipped": 0}
    assert (requeued.state, requeued.stage, requeued.deadline) == ("QUEUED", "requeued", None)
    assert len(callbacks) == 1
    assert second == {"requeued": 0, "failed": 1, "skipped": 0}
    failed = AllocatorJob.objects.get(id=job_id)
    assert failed.state == "FAILED"
    assert failed.error.startswith("The job stopped responding 2 times: the worker running it was lost")
    assert AuditLog.objects.filter(resource_id=job_id, action="allocator_job.requeued").count() == 1


def test_reaper_fails_a_job_no_worker_picked_up(trader, django_capture_on_commit_callbacks, settings):
    response, _ = submit(trader, small_body(), django_capture_on_commit_callbacks)
    fresh, _ = submit(trader, small_body(seed=7), django_capture_on_commit_callbacks)
    AllocatorJob.objects.filter(id=response.json_body["id"]).update(updated_at=timezone.now() - timedelta(hours=2))

    assert allocator_jobs_reap(now=timezone.now()) == {"requeued": 0, "failed": 1, "skipped": 0}

    assert AllocatorJob.objects.get(id=response.json_body["id"]).error.startswith(
        "No allocator worker picked the job up within 60 minutes"
    )
    assert AllocatorJob.objects.get(id=fresh.json_body["id"]).state == "QUEUED"


def test_viewer_gets_the_link_and_a_stranger_a_404(finished_job, tenant, other_tenant):
    viewer = make_member(tenant, Role.VIEWER)
    stranger = make_member(other_tenant, Role.ADMIN)

    assert viewer.api.get(f"/allocator/jobs/{finished_job.id}/report").status_code == 200
    assert stranger.api.get(f"/allocator/jobs/{finished_job.id}/report").status_code == 404


def test_link_to_a_report_gone_from_storage_is_a_404(finished_job, trader, report_dir):
    url = trader.api.get(f"/allocator/jobs/{finished_job.id}/report").json_body["url"]
    for path in report_dir.rglob("*.pptx"):
        path.unlink()

    response = Api().get(url.removeprefix("http://testserver"))

    assert response.status_code == 404
    assert response.json_body["message"] == "The report of this link no longer exists"
