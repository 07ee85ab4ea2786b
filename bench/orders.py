"""Orders end to end: placed over HTTP by concurrent clients, filled by the paper broker, seen on SSE.

Not a test: prints the machine and the figures beside the targets. Starts what `make run` starts
for orders (web, stream, relay, paper broker, applier, from `config/Procfile`) on free ports
against the development database, creates a `bench` tenant with a connected PAPER account, then
N client threads (BENCH_CLIENTS, default 32; keep-alive connections) place market orders for
BENCH_SECONDS (default 15) while one SSE client follows `order.filled` on `/events/stream`.

Figures: orders accepted per second, p50/p99 of `POST /orders`, and p50/p99 from sending the
POST to receiving the order's FILLED event. Targets on the 2-core machine at 32 clients:
>= 300 orders/s, POST p99 < 50 ms, place-to-fill p99 < 100 ms. The clients run on the same
machine and take CPU from the server, so the figures are a lower bound.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from _shared import free_port, machine, percentile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "32"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "15"))
TARGET_RATE, TARGET_POST_P99_MS, TARGET_FILL_P99_MS = 300, 50.0, 100.0
PASSWORD = "bench-password-123"


def prepare() -> str:
    """The bench tenant, its admin and a connected PAPER account (via the services); return its id."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oms.settings")
    import django

    django.setup()
    from apps.brokers.ibsim.catalogue import DEFAULT_INSTRUMENTS
    from apps.brokers.models import AccountMode, Broker, BrokerAccount
    from apps.brokers.services import InstrumentData, broker_account_connect, broker_account_create, instrument_upsert
    from apps.common.context import Actor
    from apps.tenants.models import Tenant

    actor = Actor.system("bench/orders.py")
    subprocess.run(
        [sys.executable, "manage.py", "create_tenant", "bench", "--name", "Bench",
         "--admin-email", "bench@bench.example", "--admin-password", PASSWORD],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    aapl = next(listing for listing in DEFAULT_INSTRUMENTS if listing.symbol == "AAPL")
    instrument_upsert(
        actor=actor,
        data=InstrumentData("AAPL", "NASDAQ", "USD", "STK", aapl.tick_size(aapl.reference_price), con_id=aapl.con_id),
    )
    tenant = Tenant.objects.get(slug="bench")
    account = BrokerAccount.objects.filter(tenant=tenant, broker=Broker.PAPER, account_code="BENCH1").first()
    if account is None:
        account = broker_account_create(
            tenant=tenant, actor=actor, broker=Broker.PAPER, account_code="BENCH1", mode=AccountMode.PAPER
        )
    if account.status != "CONNECTED":
        broker_account_connect(tenant=tenant, actor=actor, account_id=account.id)
    return str(account.id)


def session_cpu_seconds(session_id: int) -> float:
    """User + system CPU seconds of every live process in one session (a Procfile entry's tree)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session_id:  # fields[3] is the session id (after state, ppid, pgrp)
                total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def settle(session_ids: list[int], *, quiet: float = 0.05, limit: float = 90.0) -> None:
    """Wait until the processes are idle (booted: gunicorn workers, the URL conf the consumers load),
    so that their start-up is not counted as CPU per order."""
    deadline = time.monotonic() + limit
    before = sum(session_cpu_seconds(session) for session in session_ids)
    while time.monotonic() < deadline:
        time.sleep(1)
        now = sum(session_cpu_seconds(session) for session in session_ids)
        if now - before < quiet:
            return
        before = now


class Waits(threading.Thread):
    """Samples PostgreSQL every 50 ms: sessions waiting for an advisory lock (the per-account lock
    of placements) and for a row lock, out of the active ones."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[int, int, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        from django.db import connection

        query = (
            "SELECT count(*) FILTER (WHERE wait_event = 'advisory'),"
            " count(*) FILTER (WHERE wait_event IN ('tuple', 'transactionid')),"
            " count(*) FILTER (WHERE state = 'active') - 1"
            " FROM pg_stat_activity WHERE datname = current_database()"
        )
        with connection.cursor() as cursor:
            while not self.stop.wait(0.05):
                cursor.execute(query)
                self.samples.append(cursor.fetchone())
        connection.close()

    def summary(self) -> str:
        if not self.samples:
            return "no samples"
        count = len(self.samples)
        advisory, rows, active = (sum(sample[i] for sample in self.samples) / count for i in range(3))
        locks = f"{advisory:.1f} waiting for an account lock, {rows:.1f} for a row lock"
        return f"on average {active:.1f} active sessions, {locks}"


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "config" / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


class Fills(threading.Thread):
    """Reads `order.filled` events from the stream process; records when each order's arrived."""

    def __init__(self, port: int, token: str) -> None:
        super().__init__(daemon=True)
        self.port, self.token = port, token
        self.seen: dict[str, float] = {}
        self.ready = threading.Event()

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        path = "/api/v1/events/stream?kinds=order.filled"
        connection.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
        response = connection.getresponse()
        self.ready.set()
        for raw in response.fp:
            line = raw.decode()
            if line.startswith("data: "):
                order_id = json.loads(line[6:])["aggregate_id"]
                self.seen.setdefault(order_id, time.perf_counter())


def client(
    port: int, token: str, account_id: str, deadline: float, results: list[tuple[str, float, float, int]]
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = {"account_id": account_id, "symbol": "AAPL", "side": "BUY", "quantity": "1", "order_type": "MKT"}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        connection.request("POST", "/api/v1/orders", body=json.dumps(body), headers=headers)
        response = connection.getresponse()
        payload = json.loads(response.read())
        results.append((payload.get("id", ""), started, time.perf_counter() - started, response.status))


def main() -> None:
    env = {
        **os.environ,
        "RATE_LIMIT_WRITE": "100000000/10000000",
        "RATE_LIMIT_READ": "100000000/10000000",
        "RATE_LIMIT_TENANT": "100000000/10000000",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    account_id = prepare()
    port = free_port()
    while free_port() == port + 1:  # the stream process takes port + 1
        port = free_port()
    env["OMS_PORT"] = str(port)
    commands = procfile()
    names = ("web", "stream", "relay", "paper", "applier")
    processes = [
        subprocess.Popen(commands[name], shell=True, cwd=ROOT, env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name in names
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        for url in (f"{base}/health/live", f"http://127.0.0.1:{port + 1}/api/v1/health/live"):
            for _ in range(300):
                try:
                    urllib.request.urlopen(url, timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
        request = urllib.request.Request(
            f"{base}/auth/token",
            data=json.dumps({"username": "bench@bench.example", "password": PASSWORD, "tenant": "bench"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        token = json.load(urllib.request.urlopen(request, timeout=5))["access"]
        settle([process.pid for process in processes])
        fills = Fills(port + 1, token)
        fills.start()
        fills.ready.wait(10)
        warm: list[tuple[str, float, float, int]] = []
        client(port, token, account_id, time.perf_counter() + 2, warm)  # warm-up: pools, caches, instruments
        results: list[tuple[str, float, float, int]] = []
        time.sleep(1)  # the warm-up's fills
        cpu_before = [session_cpu_seconds(process.pid) for process in processes]
        waits = Waits()
        waits.start()
        deadline = time.perf_counter() + SECONDS
        threads = [
            threading.Thread(target=client, args=(port, token, account_id, deadline, results)) for _ in range(CLIENTS)
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        waits.stop.set()
        time.sleep(3)  # the last fills
        cpu = [session_cpu_seconds(process.pid) - before for process, before in zip(processes, cpu_before, strict=True)]
        accepted = [r for r in results if r[3] == 201]
        post_ms = [r[2] * 1000 for r in accepted]
        fill_ms = [(fills.seen[r[0]] - r[1]) * 1000 for r in accepted if r[0] in fills.seen]
        rate = len(accepted) / elapsed
        print(f"machine: {machine()}")
        print(f"load: {CLIENTS} client threads on the same machine, {SECONDS:.0f} s, market orders of 1 AAPL")
        print(f"orders accepted: {len(accepted)} ({rate:.0f}/s), refused: {len(results) - len(accepted)}")
        print(f"POST /orders p50 {statistics.median(post_ms):.1f} ms, p99 {percentile(post_ms, 0.99):.1f} ms")
        print(
            f"POST -> order.filled on /events/stream: {len(fill_ms)} seen, "
            f"p50 {percentile(fill_ms, 0.5):.1f} ms, p99 {percentile(fill_ms, 0.99):.1f} ms"
        )
        per_order = ", ".join(
            f"{name} {seconds * 1000 / max(len(accepted), 1):.1f}" for name, seconds in zip(names, cpu, strict=True)
        )
        print(f"CPU ms per accepted order: {per_order} (total {sum(cpu) * 1000 / max(len(accepted), 1):.1f})")
        print(f"database during the run: {waits.summary()}")
        verdict = (
            rate >= TARGET_RATE
            and percentile(post_ms, 0.99) < TARGET_POST_P99_MS
            and percentile(fill_ms, 0.99) < TARGET_FILL_P99_MS
        )
        print(
            f"targets: >= {TARGET_RATE} orders/s, POST p99 < {TARGET_POST_P99_MS:.0f} ms, "
            f"place-to-fill p99 < {TARGET_FILL_P99_MS:.0f} ms: {'met' if verdict else 'MISSED'}"
        )
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
