"""Request middleware: trace ids, Prometheus metrics, and the error envelope for every /api/ error."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

import orjson
import structlog
from django.http import HttpRequest, HttpResponse
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
    match = _TRACEPARENT.match(request.headers.get("traceparent", "").strip().lower())
    if match and match["trace"] != "0" * 32:
        return match["trace"]
    given = request.headers.get("X-Trace-Id", "").strip()
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

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = match.route if match is not None else "<unmatched>"
        status = str(response.status_code)
        LATENCY.labels(request.method, route, status).observe(time.perf_counter() - started)
        REQUESTS.labels(request.method, route, status).inc()
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
