"""The NinjaAPI: default-deny auth, one error envelope for everything, the routers of the apps."""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any

import orjson
import redis
import sentry_sdk
import structlog
from django.db import DataError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.parser import Parser
from ninja.renderers import BaseRenderer

from apps.allocator.api import router as allocator_router
from apps.audit.api import router as audit_router
from apps.brokers.api import brokers_router, instruments_router
from apps.brokers.ib.api import router as reconciliation_router
from apps.brokers.ib.runs import gateway_heartbeat_check
from apps.common.context import current_trace_id
from apps.common.errors import ERROR_CODES, DomainError
from apps.compliance.api import router as compliance_router
from apps.events.api import router as events_router
from apps.marketdata.api import router as marketdata_router
from apps.orders.api import executions_router
from apps.orders.api import router as orders_router
from apps.portfolio.api import pnl_router, positions_router
from apps.risk.api import router as risk_router
from apps.tenants.api import auth_router, tenants_router
from oms import readiness
from oms.system import router as system_router

log = structlog.get_logger("oms.api")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class ORJSONRenderer(BaseRenderer):
    media_type = "application/json"

    def render(self, request: HttpRequest, data: Any, *, response_status: int) -> bytes:
        return orjson.dumps(data, default=_default, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)


class ORJSONParser(Parser):
    def parse_body(self, request: HttpRequest) -> Any:
        return orjson.loads(request.body)


def envelope(
    *, status: int, code: str, message: str, details: dict[str, Any] | None = None, hint: str | None = None
) -> dict[str, Any]:
    return {"trace_id": current_trace_id(), "code": code, "message": message, "details": details or {}, "hint": hint}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    hint: str | None = None,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    body = envelope(status=status, code=code, message=message, details=details, hint=hint)
    response = HttpResponse(orjson.dumps(body, default=_default), status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


_SOURCES = {"body", "query", "path", "header", "cookie", "form", "file"}


def field_errors(errors: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Pydantic's error list → `{"field.path": ["message", …]}` without Ninja's wrapping names."""
    fields: dict[str, list[str]] = {}
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] in _SOURCES:
            source, loc = loc[0], loc[1:]
            # Ninja nests a body schema under the handler's parameter name; drop it.
            if source == "body" and len(loc) > 1:
                loc = loc[1:]
        path = ".".join(loc) or "body"
        message = str(error.get("msg", "invalid"))
        if error.get("type") == "extra_forbidden":
            message = "unknown field" if not path.startswith(("query", "filters")) else "unknown parameter"
        fields.setdefault(path, []).append(message.removeprefix("Value error, "))
    return fields


class OmsApi(NinjaAPI):
    """NinjaAPI whose OpenAPI document lists the error envelope on every operation."""

    def get_openapi_schema(self, *args: Any, **kwargs: Any) -> Any:
        schema = super().get_openapi_schema(*args, **kwargs)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ErrorOut"] = _ERROR_SCHEMA
        ref = {"$ref": "#/components/schemas/ErrorOut"}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                responses = operation.setdefault("responses", {})
                codes = [400, 401, 403, 404, 405, 409, 422, 423, 428, 429, 500, 503]
                for status in codes:
                    # Ninja keys responses by int; one declared by the route wins over the default.
                    if status in responses or str(status) in responses:
                        continue
                    responses[status] = {
                        "description": " / ".join(ERROR_CODES[status]),
                        "content": {"application/json": {"schema": ref}},
                    }
        return schema


_ERROR_SCHEMA = {
    "title": "ErrorOut",
    "type": "object",
    "properties": {
        "trace_id": {"type": "string"},
        "code": {"type": "string"},
        "message": {"type": "string"},
        "details": {"type": "object"},
        "hint": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["trace_id", "code", "message", "details", "hint"],
}


api = OmsApi(
    title="IB OMS API",
    version="1",
    description="Multi-tenant Order Management System for Interactive Brokers. See API.md for the contract.",
    urls_namespace="api-v1",
    renderer=ORJSONRenderer(),
    parser=ORJSONParser(),
    docs_url="/docs",
    openapi_url="/openapi.json",
)


def reject_unknown_query_parameters(run: Any) -> Any:
    """API.md: unknown query parameters are a 422 (a misspelt filter must not silently match all)."""
    operation = run.__self__
    allowed: set[str] = set()
    for model in operation.models:
        if getattr(model, "__ninja_param_source__", None) == "query":
            flatten_map = getattr(model, "__ninja_flatten_map__", None)
            allowed |= set(flatten_map or {field.alias or name for name, field in model.model_fields.items()})

    @functools.wraps(run)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        unknown = sorted(set(request.GET) - allowed)
        if unknown:
            return error_response(
                422,
                "VALIDATION_ERROR",
                "Unknown query parameters",
                details={name: ["unknown parameter"] for name in unknown},
                hint=f"Allowed here: {', '.join(sorted(allowed)) or 'none'}",
            )
        return run(request, *args, **kwargs)

    return checked


api.add_decorator(reject_unknown_query_parameters, mode="view")


@api.exception_handler(DomainError)
def _domain_error(request: HttpRequest, exc: DomainError) -> HttpResponse:
    return error_response(exc.status, exc.code, exc.message, details=exc.details, hint=exc.hint, headers=exc.headers)


@api.exception_handler(NinjaValidationError)
def _validation_error(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    return error_response(422, "VALIDATION_ERROR", "Invalid input", details=field_errors(exc.errors))


@api.exception_handler(AuthenticationError)
def _authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return error_response(
        401,
        "AUTHENTICATION_FAILED",
        "Authentication required",
        hint="Send 'Authorization: Bearer <access token>' or 'X-API-Key: <key>'",
    )


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if exc.status_code == 400:
        return error_response(400, "MALFORMED_REQUEST", "Request body is not valid JSON")
    code = ERROR_CODES.get(exc.status_code, ("INTERNAL_ERROR",))[0]
    return error_response(exc.status_code, code, str(exc))


@api.exception_handler(OperationalError)
@api.exception_handler(InterfaceError)
def _database_unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    # The database is down, restarting, or every pooled connection is busy: retryable, not a bug.
    log.warning("api.database_unavailable", path=request.path, error=str(exc).splitlines()[0] if str(exc) else "")
    return error_response(
        503, "UNAVAILABLE", "The database is unavailable; retry shortly", headers={"Retry-After": "2"}
    )


@api.exception_handler(redis.RedisError)
def _redis_unavailable(request: HttpRequest, exc: redis.RedisError) -> HttpResponse:
    log.warning("api.redis_unavailable", path=request.path, error=str(exc))
    return error_response(503, "UNAVAILABLE", "Redis is unavailable; retry shortly", headers={"Retry-After": "2"})


@api.exception_handler(DataError)
def _data_error(request: HttpRequest, exc: DataError) -> HttpResponse:
    # Defence in depth: input the schemas let through but PostgreSQL cannot store or compare
    # (a NUL character, a number past a column's range) is the client's error, not a 500.
    log.warning("api.data_error", path=request.path, error=str(exc).splitlines()[0])
    return error_response(422, "VALIDATION_ERROR", "A value is out of range or holds characters that cannot be stored")


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(404, "NOT_FOUND", "Not found")


@api.exception_handler(Exception)
def _unhandled(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.exception("api.unhandled_exception", path=request.path, method=request.method)
    sentry_sdk.capture_exception(exc)
    return error_response(
        500, "INTERNAL_ERROR", "Internal error", hint="Quote the trace_id when you report this problem"
    )


api.add_router("/auth", auth_router)
api.add_router("/tenants", tenants_router)
api.add_router("/audit", audit_router)
api.add_router("/allocator", allocator_router)
api.add_router("/brokers", brokers_router)
api.add_router("/instruments", instruments_router)
api.add_router("/reconciliation", reconciliation_router)
api.add_router("/orders", orders_router)
api.add_router("/executions", executions_router)
api.add_router("/events", events_router)
api.add_router("/positions", positions_router)
api.add_router("/pnl", pnl_router)
api.add_router("/risk", risk_router)
api.add_router("/compliance", compliance_router)
api.add_router("/marketdata", marketdata_router)
api.add_router("", system_router)

# /health/ready is 503 when an IB gateway's heartbeat is stale.
readiness.register("gateways", gateway_heartbeat_check)
