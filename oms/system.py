"""`/health/live`, `/health/ready` and `/version`: what operators and orchestrators probe."""

from __future__ import annotations

import platform
import subprocess
from functools import cache
from importlib.metadata import version
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from ninja import Router, Schema, Status

from oms import readiness

router = Router(tags=["system"])
API_VERSION = "v1"


class LiveOut(Schema):
    status: str


class ReadyOut(Schema):
    status: str
    checks: dict[str, dict[str, Any]]


class VersionOut(Schema):
    version: str
    git_revision: str
    api_version: str
    python: str


@router.get("/health/live", response=LiveOut, auth=None)
def health_live(request: HttpRequest) -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready", response={200: ReadyOut, 503: ReadyOut}, auth=None)
def health_ready(request: HttpRequest) -> Status:
    checks = readiness.run_checks()
    ready = all(check["ok"] for check in checks.values())
    return Status(200 if ready else 503, {"status": "ready" if ready else "unavailable", "checks": checks})


@cache
def _git_revision() -> str:
    if settings.GIT_REVISION:
        return str(settings.GIT_REVISION)
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


@cache
def _build() -> dict[str, str]:
    # importlib.metadata scans the installed distributions: once per process is enough.
    return {
        "version": version("ib-oms"),
        "git_revision": _git_revision(),
        "api_version": API_VERSION,
        "python": platform.python_version(),
    }


@router.get("/version", response=VersionOut, auth=None)
def get_version(request: HttpRequest) -> dict[str, str]:
    return _build()
