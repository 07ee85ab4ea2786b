"""The IB connector: order latency through the gateway and the simulator, and reconciliation time.

Not a test: prints the machine and the figures beside the targets. Against the development
database, a `bench-gw` tenant and a fresh IB account (a new account code each run, so earlier
runs' tickets and executions do not weigh on this one).

1. **Latency** (what `make run` runs): the IB Gateway simulator (its 50 messages/s limit on), the
   web process, the applier and `run_gateway`, each a process of its own. One client places
   BENCH_GATEWAY_ORDERS (default 300) market orders of 1 share, one every 1/BENCH_GATEWAY_RATE s
   (default 20/s, half the gateway's pacing rate, so that the figure is the path and not a queue),
   then reads each order's `routed_at` (IB's acknowledgement applied) and `closed_at` (FILLED)
   from the database: p50/p95/p99 from sending `POST /orders` to ROUTED and to FILLED.
2. **Reconciliation of 10,000 executions** (BENCH_GATEWAY_EXECUTIONS): the simulator in-process,
   the gateway service in a thread. An order is routed, the gateway stops, the simulator fills it
   10,000 times (executions the gateway missed), the gateway starts again: the reconnect run
   fetches them, diffs, publishes and journals them (one query for what is booked, one pipelined
   publish, one bulk insert). Then a second run over the same 10,000, all already booked.

Targets: routed p95 < 50 ms; reconciliation of 10,000 executions < 10 s.
BENCH_GATEWAY_RECONCILE=0 runs the latency part only.

    .venv/bin/python bench/gateway.py
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from _shared import free_port, machine, percentile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ORDERS = int(os.environ.get("BENCH_GATEWAY_ORDERS", "300"))
RATE = float(os.environ.get("BENCH_GATEWAY_RATE", "20"))
EXECUTIONS = int(os.environ.get("BENCH_GATEWAY_EXECUTIONS", "10000"))
TARGET_ROUTED_P95_MS, TARGET_RECONCILE_S = 50.0, 10.0
PASSWORD = "bench-password-123"
TENANT = "bench-gw"
CLIENT_ID = 11


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "config" / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def ib_account(code: str, port: int) -> str:
    """The bench tenant (created once) and a fresh IB account on the simulator at `port`."""
    from apps.brokers.ibsim.catalogue import DEFAULT_INSTRUMENTS
    from apps.brokers.models import AccountMode, Broker
    from apps.brokers.services import Connection, InstrumentData, broker_account_create, instrument_upsert
    from apps.common.context import Actor
    from apps.compliance.calendars import ALWAYS_OPEN
    from apps.risk.services.limits import account_risk_update
    from apps.tenants.models import Tenant

    actor = Actor.system("bench/gateway.py")
    subprocess.run(
        [sys.executable, "manage.py", "create_tenant", TENANT, "--name", "Bench gateway",
         "--admin-email", "bench-gw@bench.example", "--admin-password", PASSWORD],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    aapl = next(listing for listing in DEFAULT_INSTRUMENTS if listing.symbol == "AAPL")
    instrument_upsert(
        actor=actor,
        data=InstrumentData("AAPL", "NASDAQ", "USD", "STK", aapl.tick_size(aapl.reference_price), con_id=aapl.con_id),
    )
    tenant = Tenant.objects.get(slug=TENANT)
    account = broker_account_create(
        tenant=tenant,
        actor=actor,
        broker=Broker.IB,
        account_code=code,
        mode=AccountMode.PAPER,
        connection=Connection("127.0.0.1", port, CLIENT_ID),
    )
    # The simulator's session is always open: so is the account's calendar (as seed_demo_risk does).
    account_risk_update(tenant=tenant, actor=actor, account_id=account.id, changes={"calendar": ALWAYS_OPEN})
    return str(account.id)


def wait_http(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")


def latency(env: dict[str, str]) -> tuple[int, list[float], list[float], list[float], dict[str, list[float]]]:
    from apps.brokers.ib.models import OrderTicket
    from apps.brokers.models import BrokerAccount
    from apps.orders.models import Order

    sim_port, port = free_port(), free_port()
    code = f"DU9{random.randrange(10**6):06d}"
    account_id = ib_account(code, sim_port)
    env = env | {"OMS_PORT": str(port)}
    commands = procfile()
    sim = [sys.executable, "-m", "apps.brokers.ibsim", "--port", str(sim_port), "--accounts", code, "--seed", "42",
           "--log-level", "WARNING"]  # fmt: skip
    started = [subprocess.Popen(sim, cwd=ROOT, env=env, start_new_session=True)]
    for command in (commands["web"], commands["applier"]):
        started.append(subprocess.Popen(command, shell=True, cwd=ROOT, env=env, start_new_session=True,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
    gateway = [sys.executable, "manage.py", "run_gateway", "--account", code]
    started.append(subprocess.Popen(gateway, cwd=ROOT, env=env, start_new_session=True,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        wait_http(f"{base}/health/live")
        deadline = time.monotonic() + 30
        while BrokerAccount.objects.get(id=account_id).status != "CONNECTED":
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not connect to the simulator within 30 s")
            time.sleep(0.1)
        request = urllib.request.Request(
            f"{base}/auth/token",
            data=json.dumps({"username": "bench-gw@bench.example", "password": PASSWORD, "tenant": TENANT}).encode(),
            headers={"Content-Type": "application/json"},
        )
        token = json.load(urllib.request.urlopen(request, timeout=5))["access"]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        body = json.dumps({"account_id": account_id, "symbol": "AAPL", "side": "BUY", "quantity": "1",
                           "order_type": "MKT", "time_in_force": "DAY"})  # fmt: skip
        sent: dict[str, float] = {}
        post_ms: list[float] = []
        for index in range(ORDERS + 20):  # the first 20 warm the pools and caches up
            at = time.time()
            connection.request("POST", "/api/v1/orders", body=body, headers=headers)
            response = connection.getresponse()
            payload = json.loads(response.read())
            if response.status != 201:
                raise RuntimeError(f"POST /orders answered {response.status}: {payload}")
            if index >= 20:
                sent[payload["id"]] = at
                post_ms.append((time.time() - at) * 1000)
            time.sleep(max(0.0, 1 / RATE - (time.time() - at)))
        deadline = time.monotonic() + 60
        orders = Order.objects.filter(id__in=list(sent))
        while orders.filter(state="FILLED").count() < len(sent) and time.monotonic() < deadline:
            time.sleep(0.2)
        rows = list(orders.values_list("id", "state", "routed_at", "closed_at"))
        created = dict(orders.values_list("id", "created_at"))
        ticketed = dict(OrderTicket.objects.filter(order_id__in=list(created)).values_list("order_id", "created_at"))
    finally:
        for process in reversed(started):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 15)
        for process in started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
    routed = [(r.timestamp() - sent[str(i)]) * 1000 for i, _, r, _ in rows if r is not None]
    filled = [(c.timestamp() - sent[str(i)]) * 1000 for i, s, _, c in rows if s == "FILLED" and c is not None]
    # Where the time to ROUTED goes: the order's row (POST), the gateway's ticket (the command
    # taken off the stream), the acknowledgement applied.
    segments: dict[str, list[float]] = {"POST -> command read": [], "command -> ROUTED": []}
    for order_id, _, routed_at, _ in rows:
        ticket_at = ticketed.get(order_id)
        if ticket_at is not None and routed_at is not None:
            segments["POST -> command read"].append((ticket_at.timestamp() - sent[str(order_id)]) * 1000)
            segments["command -> ROUTED"].append((routed_at - ticket_at).total_seconds() * 1000)
    return len(sent), post_ms, routed, filled, segments


class GatewayThread:
    """The gateway service on its own event loop in a thread (as the tests run it)."""

    def __init__(self, config: object) -> None:
        from apps.brokers.ib.gateway import Gateway

        self.gateway = Gateway(config)  # type: ignore[arg-type]
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            await self.gateway.run()

        asyncio.run(serve())

    def stop(self) -> None:
        while self.loop is None:
            time.sleep(0.01)
        self.loop.call_soon_threadsafe(self.gateway.stop)
        self.thread.join(60)


def reconciliation() -> dict[str, Any]:
    from ib_async import IB, Contract, LimitOrder

    from apps.brokers.ib.models import ReconciliationRun, RunTrigger
    from apps.brokers.ibsim import IBSimulator
    from apps.brokers.management.commands.run_gateway import gateway_config
    from apps.brokers.models import BrokerAccount

    code = f"DU8{random.randrange(10**6):06d}"
    sim = IBSimulator(accounts=(code,), seed=42).start()
    account_id = ""
    try:
        sim.rate_limit(False)
        sim.auto_match(False)
        sim.set_price("AAPL", 190)
        account_id = ib_account(code, sim.port)
        # One big order placed at IB outside the OMS (another client), filled 10,000 times while no
        # gateway listens: the gateway (the master client, id 0, which sees every client's orders)
        # adopts it on connecting and applies its 10,000 executions.
        BrokerAccount.objects.filter(id=account_id).update(client_id=0)
        ib = IB()
        ib.connect(sim.host, sim.port, clientId=CLIENT_ID + 1, timeout=5)
        order = LimitOrder("BUY", EXECUTIONS, 150, account=code)
        trade = ib.placeOrder(Contract(conId=265598, exchange="SMART"), order)
        ib.sleep(0.5)
        perm_id = trade.order.permId
        ib.disconnect()
        fill_started = time.monotonic()
        sim.call(lambda: [sim.broker.force_fill(perm_id, Decimal(1), Decimal(150)) for _ in range(EXECUTIONS)], 300)
        fill_seconds = time.monotonic() - fill_started
        account = BrokerAccount.objects.get(id=account_id)
        config = replace(gateway_config(account), request_timeout=120.0, reconcile_seconds=3600.0)
        gateway = GatewayThread(config)
        deadline = time.monotonic() + 120
        while BrokerAccount.objects.get(id=account_id).status != "CONNECTED":
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not connect and reconcile within 120 s")
            time.sleep(0.05)
        run = ReconciliationRun.objects.filter(account_id=account_id, trigger=RunTrigger.RECONNECT).latest("created_at")
        assert gateway.loop is not None
        manual = gateway.gateway.sync.run(RunTrigger.MANUAL)
        again = ReconciliationRun.objects.get(id=asyncio.run_coroutine_threadsafe(manual, gateway.loop).result(300))
        gateway.stop()
    finally:
        sim.stop()
        forget_events(account_id)
    assert run.started_at is not None
    assert run.finished_at is not None
    assert again.started_at is not None
    assert again.finished_at is not None
    return {
        "executions": run.summary.get("ib_executions"),
        "backfill_s": (run.finished_at - run.started_at).total_seconds(),
        "dedup_s": (again.finished_at - again.started_at).total_seconds(),
        "fill_s": fill_seconds,
        "drifts": sorted(set(run.drifts.values_list("kind", flat=True))),
        "again_drifts": again.drifts.count(),
    }


def forget_events(account_id: str) -> int:
    """Delete the bench account's broker events from `ib:events`: no applier ran for them, and the
    next run's applier would otherwise have to wade through 10,000 of them before its own."""
    from apps.common.redis import get_redis
    from apps.events.streams import BROKER_EVENTS

    client = get_redis()
    mine = [
        entry_id
        for entry_id, fields in client.xrange(BROKER_EVENTS)
        if fields.get(b"account_id", b"").decode() == account_id
    ]
    for start in range(0, len(mine), 1000):
        client.xdel(BROKER_EVENTS, *mine[start : start + 1000])
    return len(mine)


def spread(label: str, values: list[float], extra: str = "") -> str:
    figures = "  ".join(f"p{int(q * 100)} {percentile(values, q):6.1f} ms" for q in (0.5, 0.95, 0.99))
    return f"  {label:<22}{figures}{extra}"


def main() -> None:
    env = {
        **os.environ,
        "RATE_LIMIT_WRITE": "100000000/10000000",
        "RATE_LIMIT_READ": "100000000/10000000",
        "RATE_LIMIT_TENANT": "100000000/10000000",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oms.settings")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    import django

    django.setup()
    print(f"machine: {machine()}")
    count, post, routed, filled, segments = latency(env)
    print(f"orders through the gateway and the simulator (50 messages/s limit on): {count} MKT at {RATE:.0f}/s")
    print(spread("POST /orders", post))
    print(spread("POST -> ROUTED", routed, f"   target p95 < {TARGET_ROUTED_P95_MS:.0f} ms ({len(routed)} routed)"))
    print(spread("POST -> FILLED", filled, f"   ({len(filled)} filled)"))
    for label, values in segments.items():
        print(spread(label, values, "   (of POST -> ROUTED)"))
    if os.environ.get("BENCH_GATEWAY_RECONCILE", "1") == "0":  # latency only
        return
    result = reconciliation()
    print(f"reconciliation of {result['executions']} executions the gateway missed:")
    print(
        f"  backfill run (fetch, diff, publish, journal) {result['backfill_s']:6.2f} s"
        f"   target < {TARGET_RECONCILE_S:.0f} s   drifts {', '.join(result['drifts'])}"
    )
    print(f"  again, all booked already {result['dedup_s']:25.2f} s   drifts {result['again_drifts']}")


if __name__ == "__main__":
    main()
