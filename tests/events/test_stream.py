"""`/events/stream`: tickets and the web process's 307 (in-process), and SSE from the real uvicorn process."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import orjson
import pytest

from apps.brokers.services import broker_account_grant
from apps.events import sse
from apps.events.relay import relay_pending
from apps.events.services import outbox_emit
from apps.tenants.scopes import Role
from tests.conftest import make_member, make_tenant
from tests.e2e.processes import child_environment, free_port, procfile, running, wait_http
from tests.orders.conftest import SYSTEM, make_account


def test_ticket_is_issued_and_web_redirects_without_using_it(viewer, redis_client, settings):
    settings.STREAM_URL = ""
    created = viewer.api.post("/events/stream-ticket")
    assert created.status_code == 201
    ticket = created.json_body["ticket"]
    assert created.json_body["url"] == f"http://testserver:{settings.STREAM_PORT}/api/v1/events/stream?ticket={ticket}"
    redirected = viewer.api.get(f"/events/stream?ticket={ticket}&kinds=order.filled")
    assert redirected.status_code == 307
    assert redirected["Location"] == (
        f"http://testserver:{settings.STREAM_PORT}/api/v1/events/stream?ticket={ticket}&kinds=order.filled"
    )
    assert sse.ticket_exists(client=redis_client, ticket=ticket)  # still there for the stream process
    assert redis_client.ttl(sse._ticket_key(ticket)) <= sse.TICKET_SECONDS
    settings.STREAM_URL = "https://stream.example"
    assert viewer.api.get("/events/stream").headers["Location"] == "https://stream.example/api/v1/events/stream"


def test_stream_refuses_bad_tickets_and_parameters(anonymous, viewer):
    refused = anonymous.get("/events/stream?ticket=nope")
    assert (refused.status_code, refused.json_body["code"]) == (401, "AUTHENTICATION_FAILED")
    assert anonymous.get("/events/stream").status_code == 401
    assert viewer.api.get("/events/stream?colour=red").status_code == 422
    assert viewer.api.get("/events/stream?last_event_id=abc").status_code == 422


@dataclass
class SseClient:
    """A minimal SSE reader over http.client: events as dicts, comments counted."""

    response: http.client.HTTPResponse
    comments: int = 0
    buffer: list[dict[str, str]] = field(default_factory=list)

    def next_event(self, timeout: float = 10.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        event: dict[str, str] = {}
        while time.monotonic() < deadline:
            line = self.response.fp.readline().decode().rstrip("\n")
            if line.startswith(":"):
                self.comments += 1
            elif line == "":
                if event:
                    return event
            else:
                name, _, value = line.partition(": ")
                event[name] = value
        raise TimeoutError("no event")

    def events(self, count: int) -> list[dict[str, str]]:
        found = []
        while len(found) < count:
            event = self.next_event()
            if "id" in event:
                found.append(event)
        return found


@contextmanager
def sse_connect(port: int, path: str, headers: dict[str, str] | None = None) -> Iterator[tuple[int, SseClient]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    try:
        yield response.status, SseClient(response)
    finally:
        connection.close()


def emit(tenant, kind, account=None, n=0):
    payload = {"n": n, **({"account_id": str(account.id)} if account else {})}
    return outbox_emit(tenant_id=tenant.id, stream="ev.orders", kind=kind, payload=payload, aggregate_id=n)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_stream_process_serves_events_resumes_and_heartbeats(redis_client):
    tenant, stranger = make_tenant(), make_tenant()
    shown, hidden = make_account(tenant, "SHOWN", connect=False), make_account(tenant, "HIDDEN", connect=False)
    manager = make_member(tenant, Role.MANAGER)
    trader = make_member(tenant, Role.TRADER)
    broker_account_grant(tenant=tenant, actor=SYSTEM, account_id=shown.id, user_id=trader.user.id)
    port = free_port()
    env = child_environment(OMS_PORT=str(port - 1), SSE_HEARTBEAT_SECONDS="0.5")
    with running(procfile()["stream"], env, "stream") as stream:
        wait_http(f"http://127.0.0.1:{port}/api/v1/health/live", process=stream)
        bearer = {"Authorization": f"Bearer {manager.access}"}
        with sse_connect(port, "/api/v1/events/stream", bearer) as (status, client):
            assert status == 200
            assert client.response.getheader("Content-Type").startswith("text/event-stream")
            emit(tenant, "order.created", shown, 1)
            emit(stranger, "order.created", None, 99)  # another tenant: never shown
            emit(tenant, "order.filled", hidden, 2)
            relay_pending(client=redis_client)
            first, second = client.events(2)
            assert (first["event"], orjson.loads(first["data"])["data"]["n"]) == ("order.created", 1)
            assert (second["event"], orjson.loads(second["data"])["data"]["n"]) == ("order.filled", 2)
        # Resume after the first event: the second comes again, nothing is skipped.
        resume = {**bearer, "Last-Event-ID": first["id"]}
        with sse_connect(port, "/api/v1/events/stream", resume) as (_, client):
            emit(tenant, "position.updated", shown, 3)
            relay_pending(client=redis_client)
            assert [e["event"] for e in client.events(2)] == ["order.filled", "position.updated"]
            deadline = time.monotonic() + 3
            while client.comments == 0 and time.monotonic() < deadline:
                with suppress(TimeoutError):
                    client.next_event(timeout=1)
            assert client.comments >= 1  # ": heartbeat"
        # A trader sees only the accounts granted to them; a ticket works once.
        ticket = trader.api.post("/events/stream-ticket").json_body["ticket"]
        path = f"/api/v1/events/stream?ticket={ticket}&last_event_id=0-0"
        with sse_connect(port, path) as (status, client):
            assert status == 200
            seen = [orjson.loads(e["data"])["data"]["n"] for e in client.events(2)]
            assert seen == [1, 3]
        with sse_connect(port, path) as (status, client):
            assert status == 401
            assert orjson.loads(client.response.read())["code"] == "AUTHENTICATION_FAILED"
        with sse_connect(port, "/api/v1/events/stream") as (status, client):
            assert status == 401
        with sse_connect(port, "/api/v1/events/stream", {**bearer, "Last-Event-ID": "x"}) as (status, _):
            assert status == 422
