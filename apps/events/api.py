"""The `/events` router: the broker event log tail, SSE stream tickets, and the SSE stream itself.

`GET /events/stream` is served by the stream process (uvicorn), whose URL configuration routes
it to `event_stream_view`, an async view. The web process (gunicorn) answers the same path with a
307 to the stream process, after checking the credentials or the ticket (without using it up).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis.asyncio
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Field, Query, Router, Schema, Status
from ninja.security import APIKeyQuery
from pydantic import ConfigDict

from apps.brokers.permissions import ALL_ACCOUNT_ROLES, accounts_for
from apps.common.context import current_trace_id
from apps.common.errors import AuthenticationFailed, DomainError, ValidationFailed
from apps.common.redis import get_redis
from apps.events import sse
from apps.events.selectors import TailFilters, broker_event_tail
from apps.tenants.auth import scoped
from apps.tenants.principal import Principal

router = Router(tags=["events"])
STREAM_SCOPE = "orders:view"
STREAM_PATH = "/api/v1/events/stream"


class TailQuery(Schema):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=100, ge=1, le=1000)
    msg_id: str | None = Field(default=None, max_length=64)
    order_index: int | None = Field(default=None, ge=0)
    kind: str | None = Field(default=None, max_length=64)


class BrokerEventOut(Schema):
    id: str
    kind: str
    msg_id: str | None
    order_index: int | None
    order_id: str | None
    at: str | None
    data: Any


class TailOut(Schema):
    items: list[BrokerEventOut]


class TicketOut(Schema):
    ticket: str
    expires_at: str
    url: str = Field(description="the stream URL with this ticket, for EventSource")


class StreamQuery(Schema):
    model_config = ConfigDict(extra="forbid")

    ticket: str | None = Field(default=None, max_length=128, description="from POST /events/stream-ticket")
    last_event_id: str | None = Field(
        default=None, pattern=sse.ENTRY_ID.pattern, description="resume after this event (or header Last-Event-ID)"
    )
    kinds: str | None = Field(default=None, max_length=1000, description="only these kinds, comma separated")


@router.get("/tail", response=TailOut, auth=scoped("orders:view"))
def tail_events(request: HttpRequest, query: Query[TailQuery]) -> dict[str, Any]:
    principal: Principal = request.auth  # type: ignore[attr-defined]
    filters = TailFilters(msg_id=query.msg_id, order_index=query.order_index, kind=query.kind)
    items = broker_event_tail(tenant_id=principal.tenant.id, client=get_redis(), limit=query.limit, filters=filters)
    return {"items": items}


def viewer_of(principal: Principal) -> sse.Viewer:
    """Whose events this member may stream: the tenant's, on the accounts they may see."""
    if principal.role in ALL_ACCOUNT_ROLES:
        return sse.Viewer(tenant_id=str(principal.tenant.id))
    accounts = accounts_for(tenant=principal.tenant, user=principal.user, role=principal.role)
    return sse.Viewer(
        tenant_id=str(principal.tenant.id), account_ids=frozenset(str(a) for a in accounts.values_list("id", flat=True))
    )


def stream_base(request: HttpRequest) -> str:
    """The stream process's base URL: STREAM_URL, or this host at the stream port (`make run`)."""
    if settings.STREAM_URL:
        return str(settings.STREAM_URL)
    host = request.get_host().rsplit(":", 1)[0] if not request.get_host().endswith("]") else request.get_host()
    return f"{request.scheme}://{host}:{settings.STREAM_PORT}"


@router.post("/stream-ticket", response={201: TicketOut}, auth=scoped(STREAM_SCOPE))
def create_stream_ticket(request: HttpRequest) -> Status:
    principal: Principal = request.auth  # type: ignore[attr-defined]
    ticket = sse.ticket_issue(client=get_redis(), viewer=viewer_of(principal))
    expires = datetime.now(UTC) + timedelta(seconds=sse.TICKET_SECONDS)
    return Status(
        201,
        {
            "ticket": ticket,
            "expires_at": expires.isoformat().replace("+00:00", "Z"),
            "url": f"{stream_base(request)}{STREAM_PATH}?ticket={ticket}",
        },
    )


class TicketPeek(APIKeyQuery):
    """`?ticket=`: accepted by the web process if it is valid now; the stream process uses it up."""

    param_name = "ticket"

    def authenticate(self, request: HttpRequest, key: str | None) -> str | None:
        if not key:
            return None
        if not sse.ticket_exists(client=get_redis(), ticket=key):
            raise AuthenticationFailed("Stream ticket unknown, used or expired", hint="POST /events/stream-ticket")
        return key


def _stream_auth() -> list[Any]:
    auth = [*scoped(STREAM_SCOPE), TicketPeek()]
    auth[-1].required_scope = STREAM_SCOPE  # the sweep checks every route declares its scope
    return auth


@router.get(
    "/stream",
    response={307: None},
    auth=_stream_auth(),
    openapi_extra={
        "responses": {
            200: {
                "description": "Server-Sent Events (from the stream process): `id:`, `event:` the kind, `data:` JSON",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        }
    },
)
def open_event_stream(request: HttpRequest, query: Query[StreamQuery]) -> HttpResponse:
    """The tenant's domain events as SSE. The web process redirects here to the stream process."""
    response = HttpResponse(status=307)
    response["Location"] = f"{stream_base(request)}{request.get_full_path()}"
    return response


# -- the stream process ----------------------------------------------------------------------------

_async_clients: dict[int, redis.asyncio.Redis] = {}


def _async_redis() -> redis.asyncio.Redis:
    loop = id(asyncio.get_running_loop())
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = redis.asyncio.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=2.0, socket_timeout=settings.SSE_HEARTBEAT_SECONDS + 10
        )
    return client


def _authenticate_headers(request: HttpRequest) -> sse.Viewer:
    try:
        for callback in scoped(STREAM_SCOPE):
            principal = callback(request)
            if principal is not None:
                return viewer_of(principal)
        raise AuthenticationFailed("Send Authorization / X-API-Key, or ?ticket= from POST /events/stream-ticket")
    finally:
        # The stream may stay open for hours: give the database connection back now.
        connections.close_all()


def _error(error: DomainError) -> HttpResponse:
    body = {
        "trace_id": current_trace_id(),
        "code": error.code,
        "message": error.message,
        "details": error.details,
        "hint": error.hint,
    }
    response = HttpResponse(orjson.dumps(body), status=error.status, content_type="application/json")
    for name, value in error.headers.items():
        response[name] = value
    return response


async def event_stream_view(request: HttpRequest) -> HttpResponse:
    """`GET /events/stream` in the stream process: authenticate, then stream until the client leaves."""
    if request.method != "GET":
        return _error(DomainError("Only GET", details={"method": request.method}))
    try:
        client = _async_redis()
        ticket = request.GET.get("ticket")
        if ticket:
            viewer = await sse.ticket_redeem(client=client, ticket=ticket)
            if viewer is None:
                raise AuthenticationFailed("Stream ticket unknown, used or expired", hint="POST /events/stream-ticket")
        else:
            viewer = await sync_to_async(_authenticate_headers)(request)
        unknown = sorted(set(request.GET) - {"ticket", "last_event_id", "kinds"})
        if unknown:
            raise ValidationFailed("Unknown query parameters", fields={name: ["unknown parameter"] for name in unknown})
        last_event_id = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id") or None
        if last_event_id is not None and not sse.ENTRY_ID.match(last_event_id):
            raise ValidationFailed(
                "Malformed Last-Event-ID", fields={"Last-Event-ID": ["must be an id this stream sent"]}
            )
        kinds = request.GET.get("kinds")
        if kinds:
            viewer = sse.Viewer(
                viewer.tenant_id, viewer.account_ids, frozenset(k.strip() for k in kinds.split(",") if k.strip())
            )
    except DomainError as error:
        return _error(error)
    body = sse.event_stream(
        client=client, viewer=viewer, last_event_id=last_event_id, heartbeat_seconds=settings.SSE_HEARTBEAT_SECONDS
    )
    response = StreamingHttpResponse(body, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response
