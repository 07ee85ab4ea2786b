"""Request middleware: trace ids, Prometheus metrics, the error envelope for every /api/ error, and
Django's browser middleware (sessions, CSRF, user, messages) kept to the pages that use it."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from prometheus_client import Counter, Histogram

from apps.common.context import current_trace_id, reset_trace_id, set_trace_id
from apps.common.errors import ERROR_CODES

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?P<trace>[0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_TRACE_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

REQUESTS = Counter("oms_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "oms_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def incoming_trace_id(request: HttpRequest) -> str:
    """Honour W3C `traceparent`, then `X-Trace-Id`; otherwise mint a new id."""
    # request.META rather than request.headers: the latter parses every header of the request.
    meta = request.META
    traceparent = meta.get("HTTP_TRACEPARENT")
    if traceparent:
        match = _TRACEPARENT.match(traceparent.strip().lower())
        if match and match["trace"] != "0" * 32:
            return match["trace"]
    given = meta.get("HTTP_X_TRACE_ID", "").strip()
    if _TRACE_ID.match(given):
        return given
    return uuid.uuid4().hex


class TraceMiddleware:
    """Bind the trace id to the request, the log context and the `X-Trace-Id` response header."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        trace_id = incoming_trace_id(request)
        request.trace_id = trace_id  # type: ignore[attr-defined]
        token = set_trace_id(trace_id)
        structlog.contextvars.bind_contextvars(trace_id=trace_id)
        try:
            response = self.get_response(request)
        finally:
            structlog.contextvars.unbind_contextvars("trace_id")
            reset_trace_id(token)
        response["X-Trace-Id"] = trace_id
        decision = getattr(request, "rate_limit", None)
        if decision is not None:
            response["X-RateLimit-Limit"] = str(decision.limit)
            response["X-RateLimit-Remaining"] = str(decision.remaining)
        return response


class MetricsMiddleware:
    """Count requests and time them by route pattern (not raw path, to bound cardinality)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        # The labelled children of both metrics by (method, route, status): `labels()` takes a
        # lock and builds its key on every call. Bounded by the routes and statuses that exist.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        match = getattr(request, "resolver_match", None)
        key = (request.method or "", match.route if match is not None else "<unmatched>", response.status_code)
        children = self._children.get(key)
        if children is None:
            labels = (key[0], key[1], str(key[2]))
            children = self._children[key] = (LATENCY.labels(*labels), REQUESTS.labels(*labels))
        children[0].observe(elapsed)
        children[1].inc()
        return response


_BODY_METHODS = {"POST", "PUT", "PATCH"}


class ApiErrorEnvelopeMiddleware:
    """Give every /api/ error the envelope, including Django's own 404/405 and non-JSON bodies."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith("/api/"):
            return self.get_response(request)
        if request.method in _BODY_METHODS and request.body:
            content_type = request.content_type or ""
            if content_type != "application/json" and not content_type.endswith("+json"):
                return self._error(
                    400,
                    "MALFORMED_REQUEST",
                    f"Content-Type must be application/json, got {content_type or 'none'!r}",
                )
        response = self.get_response(request)
        if response.status_code >= 400 and not response.get("Content-Type", "").startswith("application/json"):
            status = response.status_code
            message = {404: "No such endpoint", 405: f"Method {request.method} not allowed here"}.get(
                status, response.reason_phrase
            )
            replaced = self._error(status, ERROR_CODES.get(status, ("INTERNAL_ERROR",))[0], message)
            for header in ("Allow", "Retry-After"):
                if header in response:
                    replaced[header] = response[header]
            return replaced
        return response

    @staticmethod
    def _error(status: int, code: str, message: str) -> HttpResponse:
        body = {"trace_id": current_trace_id(), "code": code, "message": message, "details": {}, "hint": None}
        return HttpResponse(orjson.dumps(body), status=status, content_type="application/json")


API_PREFIX = "/api/"


class _BrowserOnly:
    """Skip a Django middleware for API requests, which never use sessions, CSRF tokens, the
    session user or messages (they authenticate with a bearer token or an API key on every
    request, and Ninja exempts its views from CSRF). The admin and the other pages keep it."""

    get_response: Callable[[HttpRequest], HttpResponse]

    def __call__(self, request: HttpRequest) -> Any:
        if request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        return super().__call__(request)  # type: ignore[misc]


class BrowserSessionMiddleware(_BrowserOnly, SessionMiddleware):
    pass


class BrowserCsrfViewMiddleware(_BrowserOnly, CsrfViewMiddleware):
    def process_view(self, request: HttpRequest, callback: Any, callback_args: Any, callback_kwargs: Any) -> Any:
        if request.path_info.startswith(API_PREFIX):
            return None
        return super().process_view(request, callback, callback_args, callback_kwargs)


class BrowserAuthenticationMiddleware(_BrowserOnly, AuthenticationMiddleware):
    pass


class BrowserMessageMiddleware(_BrowserOnly, MessageMiddleware):
    pass
