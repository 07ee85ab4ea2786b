"""`make run` / `make test` stop early, naming the service that is down and how to start it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _preflight(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/preflight.py", "--no-create"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unreachable_postgres_is_named_with_its_url_and_a_hint():
    result = _preflight(DATABASE_URL="postgres://postgres@127.0.0.1:1/oms", REDIS_URL="redis://127.0.0.1:6379/0")
    assert result.returncode == 1
    assert "PostgreSQL is not reachable at postgres://postgres@127.0.0.1:1/oms" in result.stderr
    assert "pg_ctlcluster" in result.stderr
    assert "Redis" not in result.stderr


def test_unreachable_redis_is_named_with_its_url_and_a_hint():
    result = _preflight(REDIS_URL="redis://127.0.0.1:1/0", DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres")
    assert result.returncode == 1
    assert "Redis is not reachable at redis://127.0.0.1:1/0" in result.stderr
    assert "redis-server" in result.stderr


def test_healthy_services_pass():
    result = _preflight(
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres", REDIS_URL="redis://127.0.0.1:6379/0"
    )
    assert result.returncode == 0, result.stderr


def test_export_openapi_script_writes_the_served_document(tmp_path):
    output = tmp_path / "openapi.json"
    result = subprocess.run(
        [sys.executable, "scripts/export_openapi.py", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert '"/api/v1/auth/token"' in output.read_text()
