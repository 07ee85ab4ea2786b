"""The paper broker end to end through the real processes of `make run` (web, worker, relay, paper
broker, applier), one stack shared by the module's tests: every order type and time in force, a
modification, a cancel, a bracket, and a restart of the paper broker with a resting order.

Prices are steered: a fresh quote written to the last-price cache by a "real feed" (source `ib`)
is what the paper broker trades against (it re-reads it on every price step, 0.25 s), so each
test sets the market and waits for the states that market must produce. Each test trades its own
instrument, so what one leaves resting does not meet another's prices.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.management import call_command

from apps.brokers.paper.process import WORKING
from apps.events.commands import command_stream
from apps.events.prices import LastPrice, last_price_set
from apps.events.streams import BROKER_EVENTS
from apps.tenants.scopes import Role
from tests.conftest import make_member, make_tenant
from tests.e2e.processes import child_environment, free_port, procfile, running, wait_http
from tests.orders.conftest import make_account, make_instruments

# The marker only makes pytest-django create the test database; the tests themselves talk HTTP and
# Redis, and the module's data is made (and flushed) by the module-scoped `stack`.
pytestmark = [pytest.mark.e2e, pytest.mark.django_db]
D = Decimal


class Stack:
    """The running processes, an API client of a MANAGER of the tenant, and the market controls."""

    def __init__(self, base: str, token: str, account: Any, instruments: dict[str, Any], env: dict[str, str]) -> None:
        self.base, self.token, self.account, self.instruments, self.env = base, token, account, instruments, env
        self.redis = redis.Redis.from_url(settings.REDIS_URL)
        self.paper: Any = None
        self._paper_context: Any = None

    # -- HTTP ------------------------------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple:
        request = urllib.request.Request(
            f"{self.base}/api/v1{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error), dict(error.headers)

    def place(self, symbol: str, **fields: Any) -> dict[str, Any]:
        body = {"account_id": str(self.account.id), "symbol": symbol, "side": "BUY", "quantity": "10", **fields}
        status, order, _ = self.call("POST", "/orders", body)
        assert status == 201, order
        return order

    def order(self, order_id: str) -> dict[str, Any]:
        return self.call("GET", f"/orders/{order_id}")[1]

    def reaches(self, order_id: str, state: str, *, timeout: float = 20.0) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def check() -> Any:
            nonlocal last
            last = self.order(order_id)
            return last if last["state"] == state else None

        try:
            return eventually(check, timeout=timeout)
        except AssertionError:
            raise AssertionError(f"order {order_id} is {last.get('state')}, not {state}: {last}") from None

    def executions(self, order_id: str) -> list[dict[str, Any]]:
        return self.call("GET", f"/orders/{order_id}/executions")[1]["items"]

    # -- the market ------------------------------------------------------------------------------

    def quote(
        self, symbol: str, bid: str, ask: str, last: str | None = None, size: str = "1000", *, settle: bool = False
    ) -> None:
        """A real feed's quote: the paper broker fills against it from its next price step (`settle` waits for it)."""
        middle = last or str((D(bid) + D(ask)) / 2)
        price = LastPrice(D(middle), D(bid), D(ask), D(size), D(size), datetime.now(UTC), "ib")
        last_price_set(client=self.redis, instrument_id=self.instruments[symbol].id, price=price)
        if settle:
            time.sleep(0.75)  # the paper broker steps prices every 0.25 s

    # -- the paper broker process ----------------------------------------------------------------

    def start_paper(self) -> None:
        self._paper_context = running(procfile()["paper"], self.env, "paper")
        self.paper = self._paper_context.__enter__()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the paper broker reads the account's commands and the applier the broker events.

        Orders placed before would be acknowledged late, and slow acknowledgements trip the
        tenant's ACK_LATENCY circuit breaker (trading halted for the rest of the module).
        """

        def groups(stream: str) -> set[bytes]:
            try:
                return {group["name"] for group in self.redis.xinfo_groups(stream)}
            except redis.ResponseError:  # no such stream yet
                return set()

        def ready() -> bool:
            """the paper broker and the applier consume their streams"""
            return b"paper-broker" in groups(command_stream(self.account.id)) and b"oms-applier" in groups(
                BROKER_EVENTS
            )

        eventually(ready, timeout=timeout)

    def paper_heartbeat(self) -> datetime:
        """When the paper broker last said it serves the account (a new process does so first thing)."""
        at = self.call("GET", f"/brokers/accounts/{self.account.id}")[1].get("last_heartbeat_at")
        return datetime.fromisoformat(at.replace("Z", "+00:00")) if at else datetime.min.replace(tzinfo=UTC)

    def kill_paper(self) -> None:
        """SIGKILL: no clean shutdown, whatever was only in its memory is gone."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.paper.pid, signal.SIGKILL)
        self.paper.wait(10)
        self._paper_context.__exit__(None, None, None)


def eventually(check: Callable[[], Any], *, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s: {check.__doc__ or check}")
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def _clean_redis() -> None:
    """Replaces the suite's per-test flush: the shared stack's streams and consumer groups live across the module."""


@pytest.fixture(scope="module")
def stack(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Stack]:
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    with django_db_blocker.unblock():
        instruments = make_instruments()
        tenant = make_tenant()
        account = make_account(tenant, "PAPER-E2E")
        member = make_member(tenant, Role.MANAGER)
        port = free_port()
        env = child_environment(OMS_PORT=str(port), WEB_CONCURRENCY="2", RATE_LIMIT_ENABLED="false")
        commands = procfile()
        try:
            with ExitStack() as processes:
                started = {
                    name: processes.enter_context(running(commands[name], env, name))
                    for name in ("web", "worker", "relay", "applier")
                }
                wait_http(f"http://127.0.0.1:{port}/api/v1/health/live", process=started["web"])
                stack = Stack(f"http://127.0.0.1:{port}", member.access, account, instruments, env)
                stack.start_paper()
                processes.callback(lambda: stack._paper_context.__exit__(None, None, None))
                stack.wait_ready()
                yield stack
                for name, process in {**started, "paper": stack.paper}.items():
                    assert process.poll() is None, f"{name} exited with {process.returncode}"
        finally:
            # What this module wrote is not rolled back by a test transaction: remove it as
            # pytest-django does after a transactional test.
            call_command("flush", interactive=False, verbosity=0)
            redis.Redis.from_url(settings.REDIS_URL).flushdb()


def test_every_order_type_reaches_its_state_as_the_price_moves(stack):
    stack.quote("AAPL", "99.99", "100.01", "100.00")
    market = stack.place("AAPL", order_type="MKT")
    limit = stack.place("AAPL", order_type="LMT", limit_price="99.00")
    stop = stack.place("AAPL", order_type="STP", stop_price="101.00")
    stop_limit = stack.place("AAPL", side="SELL", order_type="STP_LMT", stop_price="99.00", limit_price="98.70")
    trail_amount = stack.place("AAPL", side="SELL", order_type="TRAIL", trail_amount="1.00")
    trail_percent = stack.place("AAPL", side="SELL", order_type="TRAIL", trail_percent="2")
    on_close = stack.place("AAPL", order_type="MOC")
    limit_on_close = stack.place("AAPL", order_type="LOC", limit_price="100.00")

    assert D(stack.reaches(market["id"], "FILLED")["avg_fill_price"]) == D("100.01")  # at the ask
    for order in (limit, stop, stop_limit, trail_amount, trail_percent, on_close, limit_on_close):
        stack.reaches(order["id"], "ROUTED")

    # Up: the buy stop triggers and buys at the ask; the trailing stops follow the price up.
    stack.quote("AAPL", "101.49", "101.51", "101.50")
    assert D(stack.reaches(stop["id"], "FILLED")["avg_fill_price"]) == D("101.51")
    # Down to 98.80: the resting limit is traded through (filled at its own price); the stop-limit
    # triggers and sells at the bid above its limit; both trailing stops (ratcheted to 100.50 and
    # 99.47 by the 101.50 print; the percent one would not trigger from its initial 98.00) trigger.
    stack.quote("AAPL", "98.79", "98.81", "98.80")
    assert D(stack.reaches(limit["id"], "FILLED")["avg_fill_price"]) == D("99.00")
    for order in (stop_limit, trail_amount, trail_percent):
        assert D(stack.reaches(order["id"], "FILLED")["avg_fill_price"]) == D("98.79")
    # MOC and LOC wait for the closing auction (16:00 New York time on weekdays).
    time.sleep(0.5)
    assert {stack.order(o["id"])["state"] for o in (on_close, limit_on_close)} == {"ROUTED"}
    for order in (on_close, limit_on_close):
        assert stack.call("POST", f"/orders/{order['id']}/cancel")[0] == 202
        assert stack.reaches(order["id"], "CANCELED")["filled_quantity"] == "0"
    for order in (market, limit, stop, stop_limit, trail_amount, trail_percent):
        (execution,) = stack.executions(order["id"])
        assert (execution["quantity"], execution["commission"]) == ("10", "0.35")


def test_every_time_in_force(stack):
    stack.quote("SPY", "449.99", "450.01", "450.00", size="100")
    day = stack.place("SPY", order_type="LMT", limit_price="440.00", time_in_force="DAY")
    gtc = stack.place("SPY", order_type="LMT", limit_price="440.00", time_in_force="GTC")
    good_till = (datetime.now(UTC) + timedelta(seconds=4)).isoformat().replace("+00:00", "Z")
    gtd = stack.place("SPY", order_type="LMT", limit_price="440.00", time_in_force="GTD", good_till=good_till)
    ioc_unmarketable = stack.place("SPY", order_type="LMT", limit_price="440.00", time_in_force="IOC")
    fok_fillable = stack.place("SPY", order_type="LMT", limit_price="451.00", time_in_force="FOK")
    stack.reaches(fok_fillable["id"], "FILLED")
    # The quote shows 100 shares: an IOC for 150 takes what there is and is done for the rest.
    ioc_partial = stack.place("SPY", order_type="LMT", limit_price="451.00", time_in_force="IOC", quantity="150")
    fok_too_big = stack.place("SPY", order_type="LMT", limit_price="451.00", time_in_force="FOK", quantity="150")

    for order in (day, gtc, gtd):
        stack.reaches(order["id"], "ROUTED")
    assert stack.reaches(ioc_unmarketable["id"], "CANCELED")["filled_quantity"] == "0"
    partial = stack.reaches(ioc_partial["id"], "CANCELED")
    assert D(0) < D(partial["filled_quantity"]) < D(150)
    assert stack.reaches(fok_too_big["id"], "CANCELED")["filled_quantity"] == "0"
    assert stack.executions(fok_too_big["id"]) == []
    expired = stack.reaches(gtd["id"], "EXPIRED", timeout=20)
    assert (expired["filled_quantity"], expired["closed_at"] is not None) == ("0", True)
    for order in (day, gtc):
        assert stack.order(order["id"])["state"] == "ROUTED"
        assert stack.call("POST", f"/orders/{order['id']}/cancel")[0] == 202
        stack.reaches(order["id"], "CANCELED")


def test_modified_limit_fills_at_its_new_price_and_a_cancel_cancels(stack):
    stack.quote("SHOP.USD", "49.99", "50.01", "50.00")
    resting = stack.place("SHOP", currency="USD", order_type="LMT", limit_price="49.00")
    routed = stack.reaches(resting["id"], "ROUTED")
    change = {"limit_price": "49.50"}
    assert stack.call("PATCH", f"/orders/{resting['id']}", change)[0] == 428
    status, _, headers = stack.call("GET", f"/orders/{resting['id']}")
    assert headers["ETag"] == f'"{routed["version"]}"'
    stale = {"If-Match": f'"{routed["version"] - 1}"'}
    assert stack.call("PATCH", f"/orders/{resting['id']}", change, stale)[0] == 409
    status, pending, _ = stack.call("PATCH", f"/orders/{resting['id']}", change, {"If-Match": headers["ETag"]})
    assert (status, pending["state"]) == (200, "PENDING_MODIFY")
    modified = stack.reaches(resting["id"], "ROUTED")
    assert (D(modified["limit_price"]), modified["filled_quantity"]) == (D("49.50"), "0")
    # 49.40 would not reach the old limit of 49.00: only the modified order fills, at its new price.
    stack.quote("SHOP.USD", "49.38", "49.40", "49.39")
    filled = stack.reaches(resting["id"], "FILLED")
    assert D(filled["avg_fill_price"]) == D("49.50")

    other = stack.place("SHOP", currency="USD", order_type="LMT", limit_price="45.00")
    stack.reaches(other["id"], "ROUTED")
    status, cancelling, _ = stack.call("POST", f"/orders/{other['id']}/cancel")
    assert (status, cancelling["state"]) == (202, "PENDING_CANCEL")
    cancelled = stack.reaches(other["id"], "CANCELED")
    assert (cancelled["filled_quantity"], stack.executions(other["id"])) == ("0", [])
    assert stack.call("POST", f"/orders/{other['id']}/cancel")[0] == 409  # done is done


def test_bracket_take_profit_fills_and_the_stop_loss_is_cancelled(stack):
    stack.quote("SHOP.USD", "49.99", "50.01", "50.00", settle=True)  # the book still has the last test's quote
    parent = stack.place(
        "SHOP",
        currency="USD",
        order_type="MKT",
        order_class="BRACKET",
        take_profit={"limit_price": "51.00"},
        stop_loss={"stop_price": "49.00"},
    )
    legs = {leg["order_type"]: leg for leg in parent["legs"]}
    take_profit, stop_loss = legs["LMT"], legs["STP"]
    assert D(stack.reaches(parent["id"], "FILLED")["avg_fill_price"]) == D("50.01")
    for leg in (take_profit, stop_loss):
        stack.reaches(leg["id"], "ROUTED")
    stack.quote("SHOP.USD", "51.10", "51.12", "51.11")
    assert D(stack.reaches(take_profit["id"], "FILLED")["avg_fill_price"]) == D("51.00")
    assert stack.reaches(stop_loss["id"], "CANCELED")["filled_quantity"] == "0"
    # The stop-loss does not come back when the price falls through it afterwards.
    stack.quote("SHOP.USD", "48.00", "48.02", "48.01")
    time.sleep(1.0)
    assert stack.order(stop_loss["id"])["state"] == "CANCELED"
    assert stack.executions(stop_loss["id"]) == []


def test_resting_order_survives_a_paper_broker_crash_and_fills_once(stack):
    stack.quote("SHOP.CAD", "69.99", "70.01", "70.00")
    resting = stack.place("SHOP", currency="CAD", order_type="LMT", limit_price="69.00", quantity="1500")
    resting_id = resting["id"]
    stack.reaches(resting_id, "ROUTED")
    assert stack.redis.hexists(WORKING, resting_id)
    # A partial fill first (the quote shows 1,000 shares), so the restart must resume mid-order.
    stack.quote("SHOP.CAD", "68.89", "68.91", "68.90")
    assert stack.reaches(resting_id, "PARTIALLY_FILLED")["filled_quantity"] == "1000"
    stack.quote("SHOP.CAD", "69.99", "70.01", "70.00")
    time.sleep(0.6)  # a price step or two above the limit

    stack.kill_paper()
    killed_at = datetime.now(UTC)
    stack.start_paper()
    eventually(lambda: stack.paper_heartbeat() > killed_at, timeout=60)  # the new process is at work
    time.sleep(0.6)  # and steps prices, still above the limit
    assert stack.order(resting_id)["state"] == "PARTIALLY_FILLED"
    stack.quote("SHOP.CAD", "68.89", "68.91", "68.90")
    filled = stack.reaches(resting_id, "FILLED")
    assert (filled["filled_quantity"], D(filled["avg_fill_price"])) == ("1500", D("69.00"))
    time.sleep(1.0)  # more price steps: nothing fills again
    executions = stack.executions(resting_id)
    assert sorted((e["quantity"], e["broker_exec_id"]) for e in executions) == [
        ("1000", f"{resting_id}.1"),
        ("500", f"{resting_id}.2"),
    ]
    reported = [
        fields
        for _, fields in stack.redis.xrange(BROKER_EVENTS)
        if fields[b"kind"] == b"execution" and fields[b"order_id"].decode() == resting_id
    ]
    assert len(reported) == 2
    assert not stack.redis.hexists(WORKING, resting_id)
