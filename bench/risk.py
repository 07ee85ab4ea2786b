"""Risk gates: evaluations per second of the pure pipeline, and its share of `POST /orders`.

Not a test: prints the machine and the figures beside the targets.

1. The pure pipeline (`apps.risk.gates.evaluate`, no I/O) on a snapshot of 12 limits (every kind,
   plus instrument-scoped position and concentration limits), 500 priced positions, 100 open
   orders and 50 recent submissions, for BENCH_RISK_SECONDS (default 2): evaluations per second
   and p50/p99 of one evaluation.
2. Inside real placements: BENCH_RISK_ORDERS (default 300) limit orders placed one after the
   other through `POST /api/v1/orders` in this process (Django's test client: the whole
   middleware and placement service, no network) on the development database, for a `bench-risk`
   tenant whose PAPER account holds BENCH_RISK_POSITIONS (default 500) priced positions and the 12
   limits. The risk step (`pretrade_evaluate`: the snapshot read under the account lock, the gates
   and the compliance rules) and the pure gates are timed inside each request; the API rate
   limiter is off (it is not what is measured). Afterwards a kill switch cancels the bench orders
   and is released, so runs do not pile up open orders.

Target: the gates add under 2 ms to p99 of `POST /orders`. Judged twice: on the pure gates timed
inside the placements, and on the whole risk step (which also reads the snapshot: with 500
positions, the positions and their 500 cached prices dominate it). Also printed: the p99 of POST
minus the p99 of POST without its risk step.

The database (DATABASE_URL) must be migrated; Redis (REDIS_URL) gets the bench instruments' last
prices and the bench account's command stream. `make bench` gives both of its own.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from _shared import machine, percentile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECONDS = float(os.environ.get("BENCH_RISK_SECONDS", "2"))
ORDERS = int(os.environ.get("BENCH_RISK_ORDERS", "300"))
POSITIONS = int(os.environ.get("BENCH_RISK_POSITIONS", "500"))
TARGET_ADDED_P99_MS = 2.0
PASSWORD = "bench-password-123"


# -- 1. the pure pipeline ------------------------------------------------------------------------


def pure_snapshot(positions: int = 500) -> tuple[Any, list[Any]]:
    """A snapshot with 12 limits and `positions` holdings, and the orders to evaluate against it."""
    from apps.risk import gates
    from apps.risk.exposure import Holding

    rng = random.Random(8)
    kind = gates.LimitKind
    ids = [f"inst-{i:03d}" for i in range(positions)]
    holdings = {
        key: Holding(key, f"S{i:03d}", Decimal(rng.randint(-500, 500)), Decimal(rng.randint(5000, 50000)) / 100)
        for i, key in enumerate(ids)
    }
    limits = [
        gates.Limit("l1", 1, kind.MAX_ORDER_QTY, gates.LimitScope.TENANT, Decimal(10000)),
        gates.Limit("l2", 1, kind.MAX_ORDER_NOTIONAL, gates.LimitScope.TENANT, Decimal(5_000_000)),
        gates.Limit("l3", 1, kind.MAX_POSITION_QTY, gates.LimitScope.TENANT, Decimal(100_000)),
        gates.Limit("l4", 1, kind.MAX_POSITION_QTY, gates.LimitScope.INSTRUMENT, Decimal(50_000), scope_id=ids[0]),
        gates.Limit("l5", 1, kind.MAX_GROSS_EXPOSURE, gates.LimitScope.TENANT, Decimal(1000)),
        gates.Limit("l6", 1, kind.MAX_OPEN_ORDERS, gates.LimitScope.ACCOUNT, Decimal(10_000), scope_id="acct"),
        gates.Limit("l7", 1, kind.ORDER_RATE, gates.LimitScope.ACCOUNT, Decimal(10_000), "acct", period_seconds=60),
        gates.Limit("l8", 1, kind.DAILY_LOSS, gates.LimitScope.TENANT, Decimal(1_000_000)),
        gates.Limit("l9", 1, kind.TRAILING_DRAWDOWN, gates.LimitScope.TENANT, Decimal(2_000_000)),
        gates.Limit("l10", 1, kind.CONCENTRATION, gates.LimitScope.TENANT, Decimal(100)),
        gates.Limit("l11", 1, kind.CONCENTRATION, gates.LimitScope.INSTRUMENT, Decimal(50), scope_id=ids[0]),
        gates.Limit("l12", 1, kind.PRICE_BAND, gates.LimitScope.TENANT, Decimal(20)),
    ]
    now = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    open_orders = tuple(
        gates.OpenOrder(
            f"o{i}", ids[rng.randrange(positions)], rng.choice(["BUY", "SELL"]), Decimal(rng.randint(1, 50))
        )
        for i in range(100)
    )
    snapshot = gates.Snapshot(
        now=now,
        account_id="acct",
        equity=Decimal(50_000_000),
        peak_equity=Decimal(50_500_000),
        day_pnl=Decimal(-12_345),
        holdings=holdings,
        open_orders=open_orders,
        recent_submissions=tuple(now - timedelta(seconds=i) for i in range(50)),
        limits=tuple(limits),
        last_prices={key: holding.price for key, holding in holdings.items() if holding.price is not None},
    )
    orders = []
    for i in range(64):
        key = ids[rng.randrange(positions)]
        price = holdings[key].price
        assert price is not None
        orders.append(
            gates.OrderSpec(
                account_id="acct",
                instrument_id=key,
                symbol=holdings[key].symbol,
                side="BUY" if i % 2 else "SELL",
                quantity=Decimal(rng.randint(1, 100)),
                order_type="LMT",
                limit_price=price,
            )
        )
    return snapshot, orders


def bench_pure() -> dict[str, float]:
    from apps.risk import gates

    snapshot, orders = pure_snapshot(POSITIONS)
    accepted = [gates.evaluate(snapshot, order).accepted for order in orders]  # warm-up
    assert all(accepted), "the bench snapshot should accept its orders"
    times: list[float] = []
    deadline = time.perf_counter() + SECONDS
    index = 0
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        gates.evaluate(snapshot, orders[index % len(orders)])
        times.append(time.perf_counter() - start)
        index += 1
    return {
        "evaluations": len(times),
        "per_second": len(times) / sum(times),
        "p50_ms": statistics.median(times) * 1000,
        "p99_ms": percentile(times, 0.99) * 1000,
    }


# -- 2. inside POST /orders ----------------------------------------------------------------------


def prepare() -> tuple[Any, Any, Any, str]:
    """The bench-risk tenant, its admin, a PAPER account with POSITIONS priced positions and the
    12 limits (created once, reused by later runs); return (tenant, account, instrument, token)."""
    import subprocess

    from django.utils import timezone

    from apps.brokers.ibsim.catalogue import DEFAULT_INSTRUMENTS
    from apps.brokers.models import AccountMode, Broker, BrokerAccount, Instrument
    from apps.brokers.services import InstrumentData, broker_account_connect, broker_account_create, instrument_upsert
    from apps.common.context import Actor
    from apps.common.redis import get_redis
    from apps.events.prices import LastPrice, last_price_set
    from apps.portfolio.models import Position
    from apps.risk.models import RiskLimit
    from apps.tenants.models import Membership, Tenant
    from apps.tenants.services.auth import session_open

    actor = Actor.system("bench/risk.py")
    subprocess.run(
        [sys.executable, "manage.py", "create_tenant", "bench-risk", "--name", "Bench risk",
         "--admin-email", "bench-risk@bench.example", "--admin-password", PASSWORD],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    tenant = Tenant.objects.get(slug="bench-risk")
    admin = Membership.objects.filter(tenant=tenant, role="ADMIN").select_related("user").first()
    assert admin is not None
    aapl = next(listing for listing in DEFAULT_INSTRUMENTS if listing.symbol == "AAPL")
    instrument = instrument_upsert(
        actor=actor,
        data=InstrumentData("AAPL", "NASDAQ", "USD", "STK", aapl.tick_size(aapl.reference_price), con_id=aapl.con_id),
    )
    account = BrokerAccount.objects.filter(tenant=tenant, account_code="BENCHRISK1").first()
    if account is None:
        account = broker_account_create(
            tenant=tenant, actor=actor, broker=Broker.PAPER, account_code="BENCHRISK1", mode=AccountMode.PAPER
        )
    if account.status != "CONNECTED":
        account = broker_account_connect(tenant=tenant, actor=actor, account_id=account.id)
    existing = set(Instrument.objects.filter(symbol__startswith="BRK").values_list("symbol", flat=True))
    for i in range(POSITIONS):
        if f"BRK{i:03d}" not in existing:
            instrument_upsert(actor=actor, data=InstrumentData(f"BRK{i:03d}", "BENCH", "USD", "STK", Decimal("0.01")))
    universe = list(Instrument.objects.filter(symbol__startswith="BRK").order_by("symbol")[:POSITIONS])
    held = set(Position.objects.filter(account=account).values_list("instrument_id", flat=True))
    now = timezone.now()
    rng = random.Random(8)
    Position.objects.bulk_create(
        [
            Position(
                tenant=tenant,
                account=account,
                instrument=item,
                symbol=item.symbol,
                currency="USD",
                quantity=Decimal(rng.randint(1, 500)),
                avg_cost=Decimal(100),
                created_at=now,
                updated_at=now,
            )
            for item in universe
            if item.id not in held
        ]
    )
    pipe = get_redis().pipeline(transaction=False)
    for item in [*universe, instrument]:
        price = Decimal(187) if item.id == instrument.id else Decimal(100)
        last_price_set(client=pipe, instrument_id=item.id, price=LastPrice(price, None, None, None, None, now, "bench"))
    pipe.execute()
    kinds = {(row.kind, row.scope, row.scope_id) for row in RiskLimit.objects.filter(tenant=tenant)}
    token = session_open(user=admin.user, tenant=tenant).access
    client = api_client(token)
    response = client("PATCH", f"/api/v1/risk/accounts/{account.id}", {"capital": "100000000"})
    assert response.status_code == 200, response.content
    for body in bench_limits(account, instrument):
        if (body["kind"], body["scope"], body.get("scope_id") or "") not in kinds:
            response = client("POST", "/api/v1/risk/limits", body)
            assert response.status_code == 201, response.content
    return tenant, account, instrument, token


def bench_limits(account: Any, instrument: Any) -> list[dict[str, Any]]:
    account_scope = {"scope": "ACCOUNT", "scope_id": str(account.id)}
    instrument_scope = {"scope": "INSTRUMENT", "scope_id": "AAPL"}
    return [
        {"kind": "MAX_ORDER_QTY", "scope": "TENANT", "value": "10000"},
        {"kind": "MAX_ORDER_NOTIONAL", "scope": "TENANT", "value": "5000000"},
        {"kind": "MAX_POSITION_QTY", "scope": "TENANT", "value": "1000000"},
        {"kind": "MAX_POSITION_QTY", **instrument_scope, "value": "500000"},
        {"kind": "MAX_GROSS_EXPOSURE", **account_scope, "value": "1000"},
        {"kind": "MAX_OPEN_ORDERS", **account_scope, "value": "100000"},
        {"kind": "ORDER_RATE", **account_scope, "value": "100000", "period": "1m"},
        {"kind": "DAILY_LOSS", "scope": "TENANT", "value": "100000000"},
        {"kind": "TRAILING_DRAWDOWN", "scope": "TENANT", "value": "100000000"},
        {"kind": "CONCENTRATION", "scope": "TENANT", "value": "1000"},
        {"kind": "CONCENTRATION", **instrument_scope, "value": "1000"},
        {"kind": "PRICE_BAND", "scope": "TENANT", "value": "20"},
    ]


def api_client(token: str) -> Callable[[str, str, dict[str, Any] | None], Any]:
    import orjson
    from django.test import Client

    client = Client(SERVER_NAME="localhost")
    headers = {"Authorization": f"Bearer {token}"}

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = orjson.dumps(body) if body is not None else b""
        return client.generic(method, path, data=data, content_type="application/json", headers=headers)

    return call


class Timer:
    """Wraps a function and records the wall time of each call."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function, self.calls = function, []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.calls.append(time.perf_counter() - start)


def bench_placements() -> dict[str, float]:
    from django.db import connection, transaction

    from apps.common.context import Actor
    from apps.orders.services import risk as orders_risk
    from apps.orders.services.risk import kill_switch_enforce
    from apps.risk import gates
    from apps.risk.services import pretrade
    from apps.risk.services.controls import kill_switch_engage, kill_switch_release

    tenant, account, _, token = prepare()
    step, pure = Timer(orders_risk.pretrade_evaluate), Timer(gates.evaluate)
    orders_risk.pretrade_evaluate, gates.evaluate = step, pure  # type: ignore[assignment]
    prices = Timer(pretrade.last_marks)
    pretrade.last_marks = prices  # type: ignore[assignment]
    client = api_client(token)
    locked: list[float] = []  # from the account lock's grant to the commit (its on-commit work)

    def lock_timer(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if "pg_advisory_xact_lock" in sql:
            granted = time.perf_counter()
            transaction.on_commit(lambda: locked.append(time.perf_counter() - granted))
        return result

    body = {
        "account_id": str(account.id), "symbol": "AAPL", "quantity": "1", "order_type": "LMT",
        "limit_price": "187.00", "time_in_force": "DAY",
    }  # fmt: skip
    posts: list[float] = []
    risk: list[float] = []
    reads: list[float] = []
    for index in range(20 + ORDERS):  # 20 warm-up orders
        before, read_before = len(step.calls), len(prices.calls)
        start = time.perf_counter()
        with connection.execute_wrapper(lock_timer):
            response = client("POST", "/api/v1/orders", {**body, "side": "BUY" if index % 2 else "SELL"})
        elapsed = time.perf_counter() - start
        assert response.status_code == 201, response.content
        if index >= 20:
            posts.append(elapsed)
            risk.append(sum(step.calls[before:]))
            reads.append(sum(prices.calls[read_before:]))
    pure_calls = pure.calls[20:]
    actor = Actor.system("bench/risk.py")
    switch, _ = kill_switch_engage(
        tenant=tenant, actor=actor, scope="ACCOUNT", scope_id=str(account.id), reason="bench/risk.py clean-up"
    )
    cancelled = kill_switch_enforce(kill_switch_id=switch.id)
    kill_switch_release(tenant=tenant, actor=actor, kill_switch_id=switch.id)
    without = [post - spent for post, spent in zip(posts, risk, strict=True)]
    return {
        "orders": len(posts),
        "cancelled": cancelled,
        "post_p50_ms": statistics.median(posts) * 1000,
        "post_p99_ms": percentile(posts, 0.99) * 1000,
        "risk_p50_ms": statistics.median(risk) * 1000,
        "risk_p99_ms": percentile(risk, 0.99) * 1000,
        "prices_p50_ms": statistics.median(reads) * 1000,
        "prices_p99_ms": percentile(reads, 0.99) * 1000,
        "locked_p50_ms": statistics.median(locked[20:]) * 1000,
        "locked_p99_ms": percentile(locked[20:], 0.99) * 1000,
        "pure_p50_ms": statistics.median(pure_calls) * 1000,
        "pure_p99_ms": percentile(pure_calls, 0.99) * 1000,
        "share_pct": 100 * sum(risk) / sum(posts),
        "added_p99_ms": (percentile(posts, 0.99) - percentile(without, 0.99)) * 1000,
    }


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oms.settings")
    os.environ.setdefault("RATE_LIMIT_ENABLED", "false")
    import django

    django.setup()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    print(f"machine: {machine()}")
    pure = bench_pure()
    print(
        f"pure gate pipeline (12 limits, {POSITIONS} positions, 100 open orders): "
        f"{pure['per_second']:,.0f} evaluations/s, p50 {pure['p50_ms']:.3f} ms, p99 {pure['p99_ms']:.3f} ms "
        f"({pure['evaluations']} evaluations)"
    )
    placed = bench_placements()
    print(
        f"POST /orders in process ({placed['orders']} orders, account with {POSITIONS} positions, 12 limits): "
        f"p50 {placed['post_p50_ms']:.2f} ms, p99 {placed['post_p99_ms']:.2f} ms"
    )
    print(
        f"  risk step (snapshot under the account lock + gates + compliance): p50 {placed['risk_p50_ms']:.2f} ms, "
        f"p99 {placed['risk_p99_ms']:.2f} ms, {placed['share_pct']:.0f} % of POST time"
    )
    print(f"  pure gates inside it: p50 {placed['pure_p50_ms']:.3f} ms, p99 {placed['pure_p99_ms']:.3f} ms")
    print(
        f"  {POSITIONS + 1} last prices (one pipeline, before the lock): p50 {placed['prices_p50_ms']:.2f} ms, "
        f"p99 {placed['prices_p99_ms']:.2f} ms"
    )
    print(
        f"  account lock held (grant to commit, one client): p50 {placed['locked_p50_ms']:.2f} ms, "
        f"p99 {placed['locked_p99_ms']:.2f} ms"
    )
    print(f"  p99 of POST minus p99 of POST without its risk step: {placed['added_p99_ms']:.2f} ms")
    target, figure = TARGET_ADDED_P99_MS, placed["pure_p99_ms"]
    verdict = "met" if figure < target else "NOT met"
    print(f"  target: the gates (pure pipeline) add < {target:.0f} ms to POST p99; p99 {figure:.2f} ms: {verdict}")
    # Not the gates' target, but what a large account costs around them (issue #5's budget).
    print(f"  beyond the gates: whole risk step (reads, prices, gates, compliance) p99 {placed['risk_p99_ms']:.2f} ms")
    print(f"  clean-up: a kill switch cancelled {placed['cancelled']} bench orders and was released")


if __name__ == "__main__":
    main()
