"""`make run`'s processes, started from config/Procfile exactly as honcho does, serve the product."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from django.core.management import call_command

from apps.common.tasks import partitions_maintain_task
from tests.e2e.processes import child_environment, free_port, procfile, running, wait_http

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_web_and_stream_processes_serve_docs_admin_and_api_with_demo_credentials():
    call_command("seed_demo")
    port = free_port()
    env = child_environment(OMS_PORT=str(port), WEB_CONCURRENCY="2")
    commands = procfile()
    with running(commands["web"], env, "web") as web, running(commands["stream"], env, "stream") as stream:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/api/v1/health/live", process=web)
        wait_http(f"http://127.0.0.1:{port + 1}/api/v1/health/live", process=stream)
        assert _get(f"{base}/api/v1/docs")[0] == 200
        assert _get(f"{base}/admin/login/")[0] == 200
        assert json.loads(_get(f"{base}/api/v1/openapi.json")[1])["info"]["title"] == "IB OMS API"
        login = urllib.request.Request(
            f"{base}/api/v1/auth/token",
            data=json.dumps({"username": "admin@demo.example", "password": "demo-admin-pass"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        token = json.load(urllib.request.urlopen(login, timeout=10))["access"]
        status, body = _get(f"{base}/api/v1/auth/me", {"Authorization": f"Bearer {token}"})
        assert status == 200
        assert json.loads(body)["tenant"]["slug"] == "demo"
        status, metrics = _get(f"{base}/metrics")
        assert status == 200
        assert b"oms_http_requests_total" in metrics
        ready = json.loads(_get(f"{base}/api/v1/health/ready")[1])
        assert ready["status"] == "ready", ready


def test_worker_process_runs_tasks_from_its_queue():
    env = child_environment(OMS_PORT=str(free_port()))
    with running(procfile()["worker"], env, "worker") as worker:
        result = partitions_maintain_task.apply_async()
        report = result.get(timeout=60)
        assert worker.poll() is None
    assert "audit_auditlog" in report


def test_beat_process_starts_with_the_database_scheduler():
    env = child_environment(OMS_PORT=str(free_port()))
    with running(procfile()["beat"], env, "beat") as beat:
        deadline = time.monotonic() + 20
        from django_celery_beat.models import PeriodicTask

        while time.monotonic() < deadline and not PeriodicTask.objects.filter(name="partitions-maintain").exists():
            assert beat.poll() is None, "beat exited"
            time.sleep(0.3)
        assert PeriodicTask.objects.filter(name="partitions-maintain").exists()
