"""The per-process authentication cache: used while the tenant's epoch holds, dropped on changes."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.tenants import authcache
from apps.tenants.models import Membership, Tenant, User

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_cache():
    authcache.clear()
    yield
    authcache.clear()


def _membership_queries(api) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert api.get("/auth/me").status_code == 200
    return sum("tenants_membership" in query["sql"] for query in queries.captured_queries)


def test_second_request_is_authenticated_from_the_cache(trader):
    assert _membership_queries(trader.api) == 1
    assert _membership_queries(trader.api) == 0


def test_role_change_applies_to_the_very_next_request(admin, trader):
    assert trader.api.get("/auth/me").json_body["role"] == "TRADER"
    membership = Membership.objects.get(user=trader.user)
    assert admin.api.patch(f"/tenants/current/members/{membership.id}", {"role": "VIEWER"}).status_code == 200
    me = trader.api.get("/auth/me").json_body
    assert me["role"] == "VIEWER"
    assert "orders:place" not in me["scopes"]


def test_sign_out_applies_to_the_very_next_request(trader):
    assert trader.api.get("/auth/me").status_code == 200
    assert trader.api.post("/auth/logout").status_code == 204
    assert trader.api.get("/auth/me").status_code == 401


def test_tenant_suspended_in_the_admin_applies_to_the_very_next_request(trader, db):
    assert trader.api.get("/auth/me").status_code == 200
    staff = User.objects.create_superuser("ops-cache@example.com", "ops-password-123")
    browser = Client()
    browser.force_login(staff)
    tenant = trader.tenant
    response = browser.post(
        f"/admin/tenants/tenant/{tenant.id}/change/",
        {
            "slug": tenant.slug,
            "name": tenant.name,
            "display_timezone": "UTC",
            "status": "SUSPENDED",
            "ip_allowlist": "",
            "mfa_required_roles": "",
        },
    )
    assert response.status_code == 302
    assert trader.api.get("/auth/me").status_code == 401


def test_a_change_behind_the_applications_back_is_seen_within_the_ttl(trader, monkeypatch):
    monkeypatch.setattr(authcache, "TTL_SECONDS", 0.3)
    assert trader.api.get("/auth/me").status_code == 200
    Tenant.objects.filter(id=trader.tenant.id).update(status=Tenant.Status.SUSPENDED)  # no epoch bump
    assert trader.api.get("/auth/me").status_code == 200  # cached, as documented
    time.sleep(0.35)
    assert trader.api.get("/auth/me").status_code == 401
