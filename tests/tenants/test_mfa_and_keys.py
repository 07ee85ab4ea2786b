"""TOTP enrolment and sign-in, API keys, rate limits and IP allowlists."""

from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest
from django.test import override_settings
from django.utils import timezone

from apps.audit.models import AuditLog
from apps.common import crypto
from apps.tenants.models import ApiKey, Membership, User
from apps.tenants.scopes import Role
from tests.conftest import Api, make_member

pytestmark = pytest.mark.django_db


def _code(secret: str, offset_steps: int = 0) -> str:
    totp = pyotp.TOTP(secret)
    return totp.generate_otp(totp.timecode(timezone.now()) + offset_steps)


def _enrol(member) -> str:
    response = member.api.post("/auth/mfa/totp")
    assert response.status_code == 201
    secret = response.json_body["secret"]
    assert response.json_body["otpauth_uri"].startswith("otpauth://totp/")
    assert member.api.post("/auth/mfa/totp/confirm", {"otp": _code(secret)}).json_body["mfa_enabled"] is True
    return secret


def test_totp_secret_is_encrypted_at_rest(admin):
    secret = _enrol(admin)
    stored = User.objects.get(id=admin.user.id).totp_secret_encrypted
    assert secret not in stored
    assert crypto.decrypt(stored) == secret


def test_enrolled_user_needs_a_code_and_a_code_works_once(admin, anonymous):
    secret = _enrol(admin)
    login = {"username": admin.user.email, "password": "correct-horse-9"}
    missing = anonymous.post("/auth/token", login)
    assert missing.status_code == 401 and missing.json_body["details"] == {"otp": ["required"]}
    assert anonymous.post("/auth/token", {**login, "otp": "000000"}).status_code == 401
    code = _code(secret, 1)  # a step not yet used (confirm used the current one)
    assert anonymous.post("/auth/token", {**login, "otp": code}).status_code == 200
    replay = anonymous.post("/auth/token", {**login, "otp": code})
    assert replay.status_code == 401 and replay.json_body["details"] == {"otp": ["invalid or already used"]}


def test_wrong_confirmation_code_leaves_mfa_off(admin):
    admin.api.post("/auth/mfa/totp")
    assert admin.api.post("/auth/mfa/totp/confirm", {"otp": "123456"}).status_code == 401
    assert User.objects.get(id=admin.user.id).totp_confirmed_at is None


def test_disabling_needs_a_current_code(admin):
    secret = _enrol(admin)
    assert admin.api.post("/auth/mfa/totp/disable", {"otp": "111111"}).status_code == 401
    assert admin.api.post("/auth/mfa/totp/disable", {"otp": _code(secret, 1)}).json_body["mfa_enabled"] is False
    assert list(
        AuditLog.objects.filter(action__startswith="mfa.").values_list("action", flat=True).order_by("seq")
    ) == [
        "mfa.enrol_started",
        "mfa.enabled",
        "mfa.disabled",
    ]


def test_tenant_requiring_mfa_gives_unenrolled_users_an_enrolment_only_token(trader, anonymous):
    trader.tenant.mfa_required_roles = ["TRADER"]
    trader.tenant.save()
    response = anonymous.post("/auth/token", {"username": trader.user.email, "password": "correct-horse-9"})
    assert response.status_code == 200
    limited = Api({"Authorization": f"Bearer {response.json_body['access']}"})
    me = limited.get("/auth/me").json_body
    assert me["mfa_enrolment_only"] is True and me["scopes"] == []
    assert limited.get("/tenants/current/members").status_code == 403
    assert limited.post("/auth/mfa/totp").status_code == 201


# --- API keys --------------------------------------------------------------------------------


def _create_key(member, scopes=("orders:view",), **extra):
    return member.api.post("/auth/api-keys", {"name": "bot", "scopes": list(scopes), **extra})


def test_api_key_is_shown_once_and_stored_hashed(trader):
    response = _create_key(trader, ["orders:view", "orders:place"])
    assert response.status_code == 201
    key = response.json_body["key"]
    assert key.startswith(f"oms_{response.json_body['prefix']}_")
    stored = ApiKey.objects.get(id=response.json_body["id"])
    assert key.split("_", 2)[2] not in stored.secret_hash
    listed = trader.api.get("/auth/api-keys").json_body["items"]
    assert [item["prefix"] for item in listed] == [stored.prefix]
    assert "key" not in listed[0]
    me = Api({"X-API-Key": key}).get("/auth/me").json_body
    assert me["auth"] == "API_KEY" and me["scopes"] == ["orders:place", "orders:view"]
    assert ApiKey.objects.get(id=stored.id).last_used_at is not None


def test_api_key_cannot_hold_scopes_its_creator_lacks(viewer):
    response = _create_key(viewer, ["orders:view", "orders:place"])
    assert response.status_code == 422
    assert response.json_body["details"] == {"scopes": ["you do not hold 'orders:place', so a key of yours cannot"]}
    assert ApiKey.objects.count() == 0


def test_unknown_scope_and_past_expiry_are_422(trader):
    assert _create_key(trader, ["orders:fly"]).json_body["details"] == {"scopes": ["unknown scope 'orders:fly'"]}
    past = (timezone.now() - timedelta(minutes=1)).isoformat()
    assert _create_key(trader, expires_at=past).json_body["details"] == {"expires_at": ["must be in the future"]}


def test_revoked_expired_and_wrong_keys_are_401(trader):
    body = _create_key(trader).json_body
    key = body["key"]
    assert Api({"X-API-Key": key[:-2] + "xx"}).get("/auth/me").status_code == 401
    assert Api({"X-API-Key": "not-a-key"}).get("/auth/me").status_code == 401
    assert trader.api.delete(f"/auth/api-keys/{body['id']}").status_code == 204
    revoked = Api({"X-API-Key": key}).get("/auth/me")
    assert revoked.status_code == 401 and revoked.json_body["message"] == "API key was revoked"
    other = _create_key(trader).json_body
    ApiKey.objects.filter(id=other["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert Api({"X-API-Key": other["key"]}).get("/auth/me").json_body["message"] == "API key has expired"


def test_rotation_issues_a_new_key_and_revokes_the_old(trader):
    old = _create_key(trader).json_body
    rotated = trader.api.post(f"/auth/api-keys/{old['id']}/rotate")
    assert rotated.status_code == 201
    assert rotated.json_body["scopes"] == old["scopes"] and rotated.json_body["id"] != old["id"]
    assert Api({"X-API-Key": old["key"]}).get("/auth/me").status_code == 401
    assert Api({"X-API-Key": rotated.json_body["key"]}).get("/auth/me").status_code == 200
    assert trader.api.post(f"/auth/api-keys/{old['id']}/rotate").status_code == 409


def test_key_loses_scopes_its_creator_loses(admin, manager):
    key = _create_key(manager, ["risk:manage", "orders:view"]).json_body["key"]
    Membership.objects.filter(user=manager.user).update(role=Role.VIEWER)
    assert Api({"X-API-Key": key}).get("/auth/me").json_body["scopes"] == ["orders:view"]
    Membership.objects.filter(user=manager.user).delete()
    assert Api({"X-API-Key": key}).get("/auth/me").status_code == 401


def test_traders_see_only_their_own_keys_and_managers_see_all(trader, manager):
    mine = _create_key(trader).json_body
    _create_key(manager)
    assert [k["id"] for k in trader.api.get("/auth/api-keys").json_body["items"]] == [mine["id"]]
    assert len(manager.api.get("/auth/api-keys").json_body["items"]) == 2
    managers_key = manager.api.get("/auth/api-keys").json_body["items"][0]["id"]
    assert managers_key != mine["id"]
    assert trader.api.delete(f"/auth/api-keys/{managers_key}").status_code == 404


def test_an_api_key_cannot_create_api_keys(trader):
    key = _create_key(trader, ["orders:view"]).json_body["key"]
    response = Api({"X-API-Key": key}).post("/auth/api-keys", {"name": "x", "scopes": ["orders:view"]})
    assert response.status_code == 403
    assert ApiKey.objects.count() == 1


# --- rate limits and IP allowlists -----------------------------------------------------------


@override_settings(RATE_LIMITS={"auth": "3/0.01", "read": "3/0.01", "write": "3/0.01", "tenant": "100/10"})
def test_rate_limit_gives_429_with_retry_after_and_headers(trader):
    responses = [trader.api.get("/auth/me") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[0]["X-RateLimit-Limit"] == "3" and responses[0]["X-RateLimit-Remaining"] == "2"
    assert responses[3].json_body["code"] == "RATE_LIMITED"
    assert int(responses[3]["Retry-After"]) >= 1


@override_settings(RATE_LIMITS={"auth": "2/0.01", "read": "100/1", "write": "100/1", "tenant": "100/10"})
def test_sign_in_attempts_are_limited_per_address(anonymous, db):
    codes = [
        anonymous.post("/auth/token", {"username": "x@example.com", "password": "y"}).status_code for _ in range(3)
    ]
    assert codes == [401, 401, 429]


@override_settings(RATE_LIMITS={"auth": "100/1", "read": "100/1", "write": "100/1", "tenant": "2/0.01"})
def test_tenant_bucket_is_shared_by_its_members(trader, viewer):
    assert trader.api.get("/auth/me").status_code == 200
    assert viewer.api.get("/auth/me").status_code == 200
    assert trader.api.get("/auth/me").status_code == 429


def test_ip_allowlist_refuses_other_addresses(admin):
    admin.tenant.ip_allowlist = ["10.1.0.0/16"]
    admin.tenant.save()
    refused = admin.api.get("/auth/me")
    assert refused.status_code == 403 and "allowlist" in refused.json_body["message"]
    allowed = Api(admin.api.headers, remote_addr="10.1.2.3").get("/auth/me")
    assert allowed.status_code == 200
    login = Api().post("/auth/token", {"username": admin.user.email, "password": "correct-horse-9"})
    assert login.status_code == 401


@override_settings(TRUSTED_PROXIES=["127.0.0.1/32"])
def test_forwarded_address_counts_only_behind_a_trusted_proxy(admin):
    admin.tenant.ip_allowlist = ["10.1.0.0/16"]
    admin.tenant.save()
    forwarded = {**admin.api.headers, "X-Forwarded-For": "10.1.2.3"}
    assert Api(forwarded).get("/auth/me").status_code == 200
    assert Api(forwarded, remote_addr="192.0.2.1").get("/auth/me").status_code == 403


def test_member_factory_sanity(tenant):
    member = make_member(tenant, Role.VIEWER)
    assert member.api.get("/auth/me").json_body["role"] == "VIEWER"
