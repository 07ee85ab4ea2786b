"""API throughput and latency under concurrent clients (not a test: prints figures and targets).

Starts gunicorn exactly as `config/Procfile` does (gthread workers, keep-alive) on a free port
against the development database, signs in a bench user, and drives it with wrk (Debian package
`wrk`; installed by this script with apt-get when missing) at 32 connections:
GET /api/v1/auth/me (JWT) and GET /api/v1/tenants/current/members (an authenticated list), and
reports the workers' CPU per request beside requests/s and latency.
Rate limiting stays on (each request still takes its token from Redis) with buckets large enough
not to refuse the benchmark's own requests.

Target on the 2-core machine: >= 1,000 requests/s with p99 < 25 ms at 32 concurrent clients.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from _shared import free_port, machine

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
DURATION = os.environ.get("BENCH_DURATION", "15s")
TARGET_RPS, TARGET_P99_MS = 1000, 25.0


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or sys.exit("wrk is not available: apt-get install wrk")


def workers_cpu_seconds(master_pid: int) -> float:
    """User + system CPU time used so far by the gunicorn workers of `master_pid` (Linux /proc).

    Divided by the requests served, this is the server's CPU per request: the figure that other
    load on the machine disturbs least (requests/s and latency move with every neighbour)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[1]) == master_pid:  # ppid; then utime and stime are fields 14 and 15 of stat
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def parse_wrk(output: str) -> dict[str, float]:
    def millis(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", output, re.MULTILINE))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "requests": float(re.search(r"(\d+) requests in", output).group(1)),  # type: ignore[union-attr]
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        "p50_ms": millis(percentiles["50"]),
        "p99_ms": millis(percentiles["99"]),
        "errors": float(non_2xx.group(1)) if non_2xx else 0.0,
    }


def main() -> None:
    env = {
        **os.environ,
        "RATE_LIMIT_READ": "100000000/10000000",
        "RATE_LIMIT_TENANT": "100000000/10000000",
        "LOG_LEVEL": "WARNING",
    }
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [
            PYTHON,
            "manage.py",
            "create_tenant",
            "bench",
            "--name",
            "Bench",
            "--admin-email",
            "bench@bench.example",
            "--admin-password",
            "bench-password-123",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/gunicorn"), "oms.wsgi", "-c", "config/gunicorn.conf.py", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/health/live", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        request = urllib.request.Request(
            f"{base}/auth/token",
            data=json.dumps({"username": "bench@bench.example", "password": "bench-password-123"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        token = json.load(urllib.request.urlopen(request, timeout=5))["access"]
        wrk = ensure_wrk()
        print(f"machine: {machine()}")
        print(f"server: gunicorn gthread, {os.environ.get('WEB_CONCURRENCY', str((os.cpu_count() or 1) * 2))} workers")
        print(f"load: wrk, {CONNECTIONS} connections, {DURATION} per endpoint (client on the same machine)")
        print(f"{'endpoint':40} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'CPU us/req':>11}   target")
        for path in ("/auth/me", "/tenants/current/members"):
            subprocess.run(  # warm-up: connections, pools, caches
                [wrk, "-t2", f"-c{CONNECTIONS}", "-d2s", "-H", f"Authorization: Bearer {token}", base + path],
                capture_output=True,
                check=True,
            )
            cpu_before = workers_cpu_seconds(server.pid)
            result = subprocess.run(
                [
                    wrk,
                    "-t2",
                    f"-c{CONNECTIONS}",
                    f"-d{DURATION}",
                    "--latency",
                    "-H",
                    f"Authorization: Bearer {token}",
                    base + path,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            figures = parse_wrk(result.stdout)
            cpu_per_request = (workers_cpu_seconds(server.pid) - cpu_before) / max(figures["requests"], 1) * 1e6
            verdict = "met" if figures["rps"] >= TARGET_RPS and figures["p99_ms"] < TARGET_P99_MS else "MISSED"
            print(
                f"GET /api/v1{path:28} {figures['rps']:9.0f} {figures['p50_ms']:8.2f} {figures['p99_ms']:8.2f} "
                f"{figures['errors']:8.0f} {cpu_per_request:11.0f}   "
                f">= {TARGET_RPS} req/s, p99 < {TARGET_P99_MS:.0f} ms: {verdict}"
            )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
