"""The per-process authentication caches: sessions and API keys used while the tenant's epoch holds and
dropped on changes; verified access tokens, whose expiry is still checked on every request."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework_simplejwt.state import token_backend
from rest_framework_simplejwt.tokens import AccessToken

from apps.tenants import auth, authcache
from apps.tenants.models import ApiKey, Membership, Tenant, User
from tests.conftest import Api

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


# --- access tokens: verified once per process, expiry checked on every request ----------------------


def test_a_cached_access_token_still_expires_on_time(trader):
    leeway = token_backend.get_leeway().total_seconds()
    token = AccessToken(trader.access)
    token.set_exp(lifetime=timedelta(seconds=2 - leeway))  # valid for about two more seconds
    api = Api({"Authorization": f"Bearer {token}"})
    assert api.get("/auth/me").status_code == 200
    assert api.get("/auth/me").status_code == 200  # now from the cache of verified tokens
    time.sleep(max(0.0, token["exp"] + leeway - time.time()) + 0.1)
    response = api.get("/auth/me")
    assert response.status_code == 401
    assert "expired" in response.json_body["message"]


def test_a_forged_signature_is_refused_after_the_genuine_token_was_cached(trader):
    assert trader.api.get("/auth/me").status_code == 200
    header, payload, signature = trader.access.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    response = Api({"Authorization": f"Bearer {header}.{payload}.{flipped}"}).get("/auth/me")
    assert response.status_code == 401
    assert response.json_body["message"].startswith("Access token rejected")


# --- API keys: the same cache as sessions, under the tenant's epoch ---------------------------------


def _key(member, scopes: tuple[str, ...] = ("orders:view",)) -> dict:
    response = member.api.post("/auth/api-keys", {"name": "cached", "scopes": list(scopes)})
    assert response.status_code == 201
    return response.json_body


def _queries(api, table: str, verb: str = "SELECT") -> int:
    with CaptureQueriesContext(connection) as queries:
        assert api.get("/auth/me").status_code == 200
    return sum(q["sql"].startswith(verb) and table in q["sql"] for q in queries.captured_queries)


def test_api_key_is_authenticated_from_the_cache(trader):
    api = Api({"X-API-Key": _key(trader)["key"]})
    assert _queries(api, "tenants_apikey") == 1  # first sight of the prefix: the whole key
    assert _queries(api, "tenants_apikey") == 1  # its state, now remembered under the tenant's epoch
    assert _queries(api, "tenants_apikey") == 0
    assert _queries(api, "tenants_membership") == 0  # nor the creator's role


def test_api_key_revocation_applies_to_the_very_next_request(trader):
    body = _key(trader)
    api = Api({"X-API-Key": body["key"]})
    for _ in range(3):
        assert api.get("/auth/me").status_code == 200
    assert trader.api.delete(f"/auth/api-keys/{body['id']}").status_code == 204
    response = api.get("/auth/me")
    assert response.status_code == 401
    assert response.json_body["message"] == "API key was revoked"


def test_api_key_rotation_applies_to_the_very_next_request(trader):
    old = _key(trader)
    api = Api({"X-API-Key": old["key"]})
    for _ in range(3):
        assert api.get("/auth/me").status_code == 200
    rotated = trader.api.post(f"/auth/api-keys/{old['id']}/rotate")
    assert rotated.status_code == 201
    assert api.get("/auth/me").status_code == 401
    assert Api({"X-API-Key": rotated.json_body["key"]}).get("/auth/me").status_code == 200


def test_a_creators_role_change_shrinks_a_cached_key_at_once(admin, manager):
    api = Api({"X-API-Key": _key(manager, ("risk:manage", "orders:view"))["key"]})
    for _ in range(3):
        assert api.get("/auth/me").json_body["scopes"] == ["orders:view", "risk:manage"]
    membership = Membership.objects.get(user=manager.user)
    assert admin.api.patch(f"/tenants/current/members/{membership.id}", {"role": "VIEWER"}).status_code == 200
    assert api.get("/auth/me").json_body["scopes"] == ["orders:view"]


def test_api_key_deleted_in_the_admin_applies_to_the_very_next_request(trader):
    body = _key(trader)
    api = Api({"X-API-Key": body["key"]})
    for _ in range(3):
        assert api.get("/auth/me").status_code == 200
    staff = User.objects.create_superuser("ops-keys@example.com", "ops-password-123")
    browser = Client()
    browser.force_login(staff)
    response = browser.post(f"/admin/tenants/apikey/{body['id']}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not ApiKey.objects.filter(id=body["id"]).exists()
    assert api.get("/auth/me").status_code == 401


def test_last_used_is_written_once_per_granularity_despite_the_cache(trader, monkeypatch):
    api = Api({"X-API-Key": _key(trader)["key"]})
    assert _queries(api, "tenants_apikey", "UPDATE") == 1
    assert [_queries(api, "tenants_apikey", "UPDATE") for _ in range(3)] == [0, 0, 0]
    monkeypatch.setattr(auth, "LAST_USED_GRANULARITY", timedelta(0))
    assert [_queries(api, "tenants_apikey", "UPDATE") for _ in range(2)] == [1, 1]
