"""Every error from every layer has the envelope of API.md and a trace id."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditLog
from tests.conftest import Api

pytestmark = pytest.mark.django_db

ENVELOPE_KEYS = {"trace_id", "code", "message", "details", "hint"}


def _assert_envelope(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json_body
    assert set(body) == ENVELOPE_KEYS
    assert body["code"] == code
    assert body["trace_id"] == response["X-Trace-Id"]
    return body


def test_unknown_path_is_404_envelope(anonymous):
    _assert_envelope(anonymous.get("/no/such/thing"), 404, "NOT_FOUND")


def test_wrong_method_is_405_envelope(admin):
    response = admin.api.delete("/auth/me")
    _assert_envelope(response, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in response["Allow"]


def test_body_that_is_not_json_is_400(anonymous):
    response = anonymous.client.post("/api/v1/auth/token", data=b"{not json", content_type="application/json")
    response.json_body = response.json()
    _assert_envelope(response, 400, "MALFORMED_REQUEST")


def test_wrong_content_type_is_400(anonymous):
    response = anonymous.client.post("/api/v1/auth/token", data="username=a&password=b", content_type="text/plain")
    response.json_body = response.json()
    body = _assert_envelope(response, 400, "MALFORMED_REQUEST")
    assert "Content-Type" in body["message"]


def test_validation_errors_are_keyed_by_field_path(admin):
    response = admin.api.post("/auth/api-keys", {"name": "", "scopes": "orders:view", "expires_at": "soon"})
    body = _assert_envelope(response, 422, "VALIDATION_ERROR")
    assert set(body["details"]) == {"name", "scopes", "expires_at"}
    assert all(isinstance(messages, list) and messages for messages in body["details"].values())


def test_unknown_query_parameter_is_422(admin):
    body = _assert_envelope(admin.api.get("/tenants/current/members?rolee=ADMIN"), 422, "VALIDATION_ERROR")
    assert body["details"] == {"rolee": ["unknown parameter"]}


def test_unhandled_exception_is_500_revealing_nothing(admin, monkeypatch, caplog):
    from apps.tenants import api as tenants_api

    def explode(**_):
        raise RuntimeError("password=hunter2 at db-host-7")

    monkeypatch.setattr(tenants_api.tenants, "tenant_update", explode)
    response = admin.api.patch("/tenants/current", {"name": "x"})
    body = _assert_envelope(response, 500, "INTERNAL_ERROR")
    assert "hunter2" not in response.content.decode()
    assert "db-host" not in response.content.decode()
    assert body["hint"] == "Quote the trace_id when you report this problem"
    # The log line carries the same trace id, so the report can be found.
    logged = [record.msg for record in caplog.records if isinstance(record.msg, dict)]
    assert any(
        entry.get("event") == "api.unhandled_exception" and entry.get("trace_id") == body["trace_id"]
        for entry in logged
    )


def test_incoming_traceparent_becomes_the_trace_id_and_reaches_the_audit_row(admin):
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = admin.api.patch(
        "/tenants/current", {"name": "Traced"}, headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
    )
    assert response["X-Trace-Id"] == trace
    assert AuditLog.objects.get(action="tenant.updated").trace_id == trace


def test_incoming_x_trace_id_is_honoured_and_garbage_is_replaced(anonymous):
    assert anonymous.get("/health/live", headers={"X-Trace-Id": "client-trace-123"})["X-Trace-Id"] == "client-trace-123"
    replaced = anonymous.get("/health/live", headers={"X-Trace-Id": "bad id with spaces"})["X-Trace-Id"]
    assert replaced != "bad id with spaces"
    assert len(replaced) == 32


def test_every_response_carries_a_trace_id(admin):
    for response in (admin.api.get("/auth/me"), Api().get("/version"), admin.api.get("/nope")):
        assert len(response["X-Trace-Id"]) >= 8


def test_openapi_document_lists_the_error_envelope_on_every_operation(anonymous):
    schema = anonymous.get("/openapi.json").json_body
    assert schema["components"]["schemas"]["ErrorOut"]["required"] == ["trace_id", "code", "message", "details", "hint"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert "422" in operation["responses"], f"{method} {path}"
            assert "500" in operation["responses"], f"{method} {path}"


def test_datetimes_need_a_zone_and_are_normalised_to_utc(admin):
    assert admin.api.get("/audit/logs?from=2026-01-01T00:00:00").json_body["details"] == {
        "from": ["must include a time zone (Z or ±hh:mm)"]
    }
    assert admin.api.get("/audit/logs?from=3338-04-25T04:35:14%2B16:51").status_code == 200
    assert admin.api.get("/audit/logs?to=9999-12-31T23:59:59-10:00").status_code == 422


def test_redis_down_is_503_unavailable_with_retry_after(admin):
    from django.test import override_settings

    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        response = admin.api.post("/events/stream-ticket")
    assert response.status_code == 503
    assert response.json_body["code"] == "UNAVAILABLE"
    assert response["Retry-After"] == "2"
