"""Run the project's real processes in tests: free loopback ports, readiness waits, clean shutdown."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_environment(**extra: str) -> dict[str, str]:
    """The environment a child process needs to share this test's database and Redis db."""
    database = connection.settings_dict["NAME"]
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.REDIS_URL,
        "CELERY_RESULT_BACKEND": settings.REDIS_URL,
        "LOG_LEVEL": "WARNING",
        # Test fixtures hash passwords with the fast hasher (see tests/conftest.py).
        "PASSWORD_HASHERS": ",".join(settings.PASSWORD_HASHERS),
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
        **extra,
    }


@contextmanager
def running(command: str, env: dict[str, str], name: str) -> Iterator[subprocess.Popen[bytes]]:
    """Start `command` in its own process group and kill the whole group afterwards."""
    (ROOT / "var").mkdir(exist_ok=True)
    log = open(ROOT / "var" / f"test-{name}-{os.getpid()}.log", "wb")  # noqa: SIM115  # closed below
    process = subprocess.Popen(  # Procfile lines are shell commands
        command, shell=True, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield process
    finally:
        _stop_group(process)
        log.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_group(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM the whole process group, wait until every member is gone, SIGKILL what lingers.

    Waiting on the shell alone is not enough: the shell dies at once while the program it
    started may still be shutting down (or ignore the signal), and would outlive the test.
    """
    pgid = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _group_alive(pgid) and time.monotonic() < deadline:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.1)
    if _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def wait_http(url: str, *, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            urllib.request.urlopen(url, timeout=2)  # loopback only
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "config" / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries
