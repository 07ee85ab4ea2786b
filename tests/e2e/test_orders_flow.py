"""Orders end to end through the real processes of `make run`: web, relay, paper broker and applier."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import redis
from django.conf import settings

from apps.events.streams import BROKER_EVENTS
from apps.tenants.scopes import Role
from tests.conftest import make_member, make_tenant
from tests.e2e.processes import child_environment, free_port, procfile, running, wait_http
from tests.orders.conftest import make_account, make_instruments

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class Http:
    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{self.base}/api/v1{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)


def eventually(check: Callable[[], Any], *, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s: {check.__doc__ or check}")
        time.sleep(0.05)


@pytest.fixture
def stack() -> Iterator[tuple[Http, Any]]:
    make_instruments()
    tenant = make_tenant()
    account = make_account(tenant, "PAPER-E2E")
    member = make_member(tenant, Role.MANAGER)
    port = free_port()
    env = child_environment(OMS_PORT=str(port), WEB_CONCURRENCY="2")
    commands = procfile()
    with ExitStack() as stack:
        processes = {
            name: stack.enter_context(running(commands[name], env, name))
            for name in ("web", "relay", "paper", "applier")
        }
        wait_http(f"http://127.0.0.1:{port}/api/v1/health/live", process=processes["web"])
        yield Http(f"http://127.0.0.1:{port}", member.access), account
        for name, process in processes.items():
            assert process.poll() is None, f"{name} exited with {process.returncode}"


def stream_kinds(client: redis.Redis, stream: str, aggregate_id: str | None = None) -> list[str]:
    return [
        fields[b"kind"].decode()
        for _, fields in client.xrange(stream)
        if aggregate_id is None or fields.get(b"aggregate_id", b"").decode() == aggregate_id
    ]


def test_market_order_is_routed_and_filled_with_execution_position_and_events(stack):
    http, account = stack
    client = redis.Redis.from_url(settings.REDIS_URL)
    status, placed = http.call(
        "POST",
        "/orders",
        {"account_id": str(account.id), "symbol": "AAPL", "side": "BUY", "quantity": "10", "order_type": "MKT"},
    )
    assert (status, placed["state"]) == (201, "NEW")
    order_id = placed["id"]

    def filled() -> Any:
        """the order is FILLED"""
        body = http.call("GET", f"/orders/{order_id}")[1]
        return body if body["state"] == "FILLED" else None

    order = eventually(filled)
    assert (order["filled_quantity"], order["broker_order_id"], order["routed_at"] is not None) == (
        "10",
        f"PAPER-{order_id}",
        True,
    )
    lifecycle = [(e["from_state"], e["to_state"]) for e in http.call("GET", f"/orders/{order_id}/events")[1]["items"]]
    assert lifecycle == [(None, "NEW"), ("NEW", "ROUTED"), ("ROUTED", "FILLED")]
    (execution,) = http.call("GET", f"/orders/{order_id}/executions")[1]["items"]
    assert (execution["quantity"], execution["commission"]) == ("10", "0.35")
    assert http.call("GET", "/positions/AAPL")[1]["quantity"] == "10"
    # The paper broker marks the instrument in the last-price cache on its next price step.
    assert eventually(lambda: http.call("GET", "/positions/AAPL")[1]["market_price"])
    expected = ["order.created", "order.routed", "order.filled"]
    assert eventually(lambda: stream_kinds(client, "ev.orders", order_id) == expected or None)
    assert eventually(lambda: "position.updated" in stream_kinds(client, "ev.positions"))

    # The broker reports the fill again (a reconnect replays executions): nothing changes.
    (fill_entry,) = [fields for _, fields in client.xrange(BROKER_EVENTS) if fields[b"kind"] == b"execution"]
    client.xadd(BROKER_EVENTS, fill_entry)
    marker = client.xadd(BROKER_EVENTS, {"kind": "test.marker"})
    eventually(lambda: client.xpending(BROKER_EVENTS, "oms-applier")["pending"] == 0 and _delivered(client, marker))
    assert http.call("GET", f"/orders/{order_id}")[1]["version"] == order["version"]
    assert http.call("GET", "/positions/AAPL")[1]["quantity"] == "10"
    assert len(http.call("GET", f"/orders/{order_id}/executions")[1]["items"]) == 1


def _delivered(client: redis.Redis, entry_id: bytes) -> bool:
    (group,) = [group for group in client.xinfo_groups(BROKER_EVENTS) if group["name"] == b"oms-applier"]
    return bool(group["last-delivered-id"] == entry_id)


def test_resting_limit_order_is_cancelled(stack):
    http, account = stack
    body = {
        "account_id": str(account.id),
        "symbol": "AAPL",
        "side": "BUY",
        "quantity": "5",
        "order_type": "LMT",
        "limit_price": "100.00",
    }
    order_id = http.call("POST", "/orders", body)[1]["id"]
    eventually(lambda: http.call("GET", f"/orders/{order_id}")[1]["state"] == "ROUTED")
    status, pending = http.call("POST", f"/orders/{order_id}/cancel")
    assert (status, pending["state"]) == (202, "PENDING_CANCEL")
    cancelled = eventually(lambda: (b := http.call("GET", f"/orders/{order_id}")[1])["state"] == "CANCELED" and b)
    assert (cancelled["filled_quantity"], cancelled["closed_at"] is not None) == ("0", True)
    assert http.call("GET", "/positions?include_flat=true")[1]["items"] == []
