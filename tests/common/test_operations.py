"""Health, version, metrics and the admin."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

from apps.audit.models import AuditLog
from apps.tenants.models import Tenant
from tests.conftest import Api

pytestmark = pytest.mark.django_db


def test_live_needs_nothing(anonymous):
    assert anonymous.get("/health/live").json_body == {"status": "ok"}


def test_ready_checks_database_redis_and_migrations(anonymous):
    response = anonymous.get("/health/ready")
    assert response.status_code == 200
    checks = response.json_body["checks"]
    assert (checks["database"]["ok"], checks["redis"]["ok"], checks["migrations"]["ok"]) == (True, True, True)


def test_ready_is_503_naming_redis_when_redis_is_down(anonymous):
    # A port nothing listens on: the check must fail fast and say which dependency.
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        response = anonymous.get("/health/ready")
    assert response.status_code == 503
    assert response.json_body["status"] == "unavailable"
    assert response.json_body["checks"]["redis"]["ok"] is False
    assert "redis unreachable" in response.json_body["checks"]["redis"]["error"]
    assert response.json_body["checks"]["database"]["ok"] is True


def test_version_reports_build_and_api_version(anonymous):
    body = anonymous.get("/version").json_body
    assert body["api_version"] == "v1"
    assert body["version"] == "0.1.0"
    assert body["git_revision"]


def test_metrics_count_requests_by_route_and_status(admin):
    admin.api.get("/auth/me")
    admin.api.get("/auth/me")
    text = Client().get("/metrics").content.decode()
    assert 'oms_http_requests_total{method="GET",route="api/v1/auth/me",status="200"}' in text
    assert (
        'oms_http_request_duration_seconds_bucket{le="0.25",method="GET",route="api/v1/auth/me",status="200"}' in text
    )


def test_root_sends_visitors_to_the_docs(db):
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/api/v1/docs"
    assert Client().get("/api/v1/docs").status_code == 200


def test_admin_changes_are_audited(db):
    from apps.tenants.models import User

    staff = User.objects.create_superuser("ops@example.com", "ops-password-123")
    tenant = Tenant.objects.create(slug="adm", name="Adm")
    client = Client()
    client.force_login(staff)
    response = client.post(
        f"/admin/tenants/tenant/{tenant.id}/change/",
        {
            "slug": "adm",
            "name": "Renamed by ops",
            "display_timezone": "UTC",
            "status": "ACTIVE",
            "ip_allowlist": "",
            "mfa_required_roles": "",
        },
    )
    assert response.status_code == 302, response.content[:500]
    entry = AuditLog.objects.get(action="admin.change", resource_type="tenants.tenant")
    assert entry.tenant_id == tenant.id
    assert entry.actor_label == "admin:ops@example.com"
    assert entry.after["name"] == "Renamed by ops"
    assert entry.before["name"] == "Adm"


def test_audit_log_is_read_only_in_the_admin(db):
    from apps.tenants.models import User

    staff = User.objects.create_superuser("ops2@example.com", "ops-password-123")
    client = Client()
    client.force_login(staff)
    assert client.get("/admin/audit/auditlog/").status_code == 200
    assert client.get("/admin/audit/auditlog/add/").status_code == 403


def test_openapi_json_is_served(anonymous):
    schema = Api().get("/openapi.json").json_body
    assert schema["info"]["title"] == "IB OMS API"
    assert "/api/v1/orders" in schema["paths"] or "/api/v1/auth/token" in schema["paths"]
