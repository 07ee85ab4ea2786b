"""The job end to end through a real Celery worker on the `allocator` queue.

The worker is a `celery -A oms worker -Q allocator` subprocess pointed at this run's test
database and Redis db; jobs reach it the production way (on_commit → signed envelope → broker).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from pptx import Presentation
from pptx.enum.shapes import MSO_SHAPE_TYPE

from apps.allocator.models import AllocatorJob
from oms.celery import app as celery_app
from tests.allocator.conftest import local_storages
from tests.allocator.jobs import small_body
from tests.conftest import Api

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))


@pytest.fixture
def worker(transactional_db: Any, tmp_path: Path, settings: Any) -> Iterator[subprocess.Popen[bytes]]:
    settings.STORAGES = local_storages(tmp_path)
    name = f"allocator-test-{os.getpid()}@localhost"
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.REDIS_URL,
        "CELERY_RESULT_BACKEND": settings.REDIS_URL,
        "MEDIA_ROOT": str(tmp_path),
        "FILE_STORAGE": "local",
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [CELERY, "-A", "oms", "worker", "-Q", "allocator", "-c", "1", "-P", "prefork", "-n", name, "-l", "INFO"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not celery_app.control.ping(destination=[name], timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Celery worker did not start:\n{log_path.read_text()[-4000:]}")
        yield process
    finally:
        process.terminate()  # warm shutdown
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(member: Any, job_id: str, states: set[str], timeout: float = 90) -> tuple[dict[str, Any], list[Any]]:
    """Poll the job until it reaches one of `states`; return it and every (state, stage, progress) seen."""
    seen: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        job = member.api.get(f"/allocator/jobs/{job_id}").json_body
        if not seen or seen[-1] != (job["state"], job["stage"], job["progress"]):
            seen.append((job["state"], job["stage"], job["progress"]))
        if job["state"] in states:
            return job, seen
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {job['state']} after {timeout} s; seen {seen}")
        time.sleep(0.1)


def test_job_runs_on_the_worker_and_its_report_downloads(worker, trader):
    response = trader.api.post("/allocator/jobs", small_body(n_sims=2000, grid_step=0.1))
    assert response.status_code == 202

    job, seen = wait_for(trader, response.json_body["id"], {"SUCCEEDED", "FAILED"})

    assert job["state"] == "SUCCEEDED", job["error"]
    assert (job["progress"], job["stage"], job["attempts"]) == (100.0, "done", 1)
    assert job["summary"]["n_candidates"] == 286
    # Polling may miss stages of a quick job; what it saw must be in order.
    assert {state for state, _, _ in seen} <= {"QUEUED", "RUNNING", "SUCCEEDED"}
    progress = [percent for _, _, percent in seen]
    assert progress == sorted(progress)
    link = trader.api.get(f"/allocator/jobs/{job['id']}/report").json_body
    download = Api().client.get(link["url"])
    assert download.status_code == 200
    deck = Presentation(io.BytesIO(b"".join(download.streaming_content)))
    pictures = [shape for slide in deck.slides for shape in slide.shapes if shape.shape_type == MSO_SHAPE_TYPE.PICTURE]
    assert len(deck.slides) == 8
    assert len(pictures) == 4
    assert all(picture.image.blob.startswith(b"\x89PNG") for picture in pictures)


def test_running_job_is_canceled_and_the_worker_moves_on(worker, trader):
    slow = trader.api.post(
        "/allocator/jobs", small_body(n_sims=20000, grid_step=0.05, horizon_years=30, n_jobs=1)
    ).json_body
    running, _ = wait_for(trader, slow["id"], {"RUNNING"}, timeout=60)
    deadline = time.monotonic() + 60
    while running["stage"] != "simulating" or running["progress"] <= 2.0:
        assert time.monotonic() < deadline, running
        time.sleep(0.1)
        running = trader.api.get(f"/allocator/jobs/{slow['id']}").json_body

    canceled = trader.api.post(f"/allocator/jobs/{slow['id']}/cancel")
    # The worker has one process: the next job only starts once the canceled one has stopped.
    quick = trader.api.post("/allocator/jobs", small_body()).json_body
    done, _ = wait_for(trader, quick["id"], {"SUCCEEDED", "FAILED"}, timeout=60)

    assert canceled.status_code == 200
    assert canceled.json_body["state"] == "CANCELED"
    assert done["state"] == "SUCCEEDED"
    stopped = AllocatorJob.objects.get(id=slow["id"])
    assert (stopped.state, stopped.report.name, stopped.summary) == ("CANCELED", "", None)
    assert stopped.progress < 90
    assert settings.STORAGES["reports"]["OPTIONS"]["location"].is_dir()
    assert sorted(p.name for p in settings.STORAGES["reports"]["OPTIONS"]["location"].rglob("*.pptx")) == [
        f"{quick['id']}.pptx"
    ]
