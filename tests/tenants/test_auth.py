"""Sign-in, refresh rotation, reuse detection, sign-out, lockout."""

from __future__ import annotations

import pytest
from django.test import override_settings

from apps.audit.models import AuditLog
from apps.tenants.models import TokenFamily, User
from apps.tenants.scopes import Role
from tests.conftest import Api, make_member, make_tenant

pytestmark = pytest.mark.django_db


def _login(api: Api, email: str, password: str = "correct-horse-9", **extra: str):
    return api.post("/auth/token", {"username": email, "password": password, **extra})


def test_login_returns_token_pair_for_the_only_tenant(admin, anonymous):
    response = _login(anonymous, admin.user.email)
    assert response.status_code == 200
    body = response.json_body
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    me = Api({"Authorization": f"Bearer {body['access']}"}).get("/auth/me")
    assert me.status_code == 200
    assert me.json_body["tenant"]["slug"] == admin.tenant.slug
    assert me.json_body["role"] == "ADMIN"
    assert "system:admin" in me.json_body["scopes"]
    assert AuditLog.objects.filter(tenant_id=admin.tenant.id, action="auth.login").count() == 1


def test_login_with_wrong_password_is_401_and_audited(admin, anonymous):
    response = _login(anonymous, admin.user.email, "wrong-password")
    assert response.status_code == 401
    assert response.json_body["code"] == "AUTHENTICATION_FAILED"
    assert response.json_body["message"] == "Invalid email or password"
    assert AuditLog.objects.filter(action="auth.login_failed").count() == 1
    assert "wrong-password" not in str(list(AuditLog.objects.values()))


def test_login_unknown_email_says_the_same_as_wrong_password(anonymous, db):
    response = _login(anonymous, "nobody@example.com")
    assert response.status_code == 401
    assert response.json_body["message"] == "Invalid email or password"


def test_member_of_two_tenants_must_name_one(admin, anonymous):
    second = make_tenant("second-co")
    from apps.tenants.models import Membership

    Membership.objects.create(tenant=second, user=admin.user, role=Role.VIEWER)
    response = _login(anonymous, admin.user.email)
    assert response.status_code == 422
    assert "tenant" in response.json_body["details"]
    response = _login(anonymous, admin.user.email, tenant="second-co")
    assert response.status_code == 200
    me = Api({"Authorization": f"Bearer {response.json_body['access']}"}).get("/auth/me")
    assert me.json_body["tenant"]["slug"] == "second-co" and me.json_body["role"] == "VIEWER"


def test_login_to_a_tenant_one_does_not_belong_to_is_401(admin, other_tenant, anonymous):
    response = _login(anonymous, admin.user.email, tenant=other_tenant.slug)
    assert response.status_code == 401


@override_settings(LOGIN_LOCKOUT_THRESHOLD=3)
def test_repeated_failures_lock_the_account_even_for_the_right_password(admin, anonymous):
    for _ in range(3):
        assert _login(anonymous, admin.user.email, "nope").status_code == 401
    response = _login(anonymous, admin.user.email)
    assert response.status_code == 401
    assert "locked" in response.json_body["message"]
    assert "locked_until" in response.json_body["details"]
    assert AuditLog.objects.filter(action="auth.locked_out").count() == 1
    User.objects.filter(id=admin.user.id).update(locked_until=None)
    assert _login(anonymous, admin.user.email).status_code == 200


def test_refresh_rotates_and_the_old_refresh_token_stops_working(admin, anonymous):
    first = anonymous.post("/auth/token/refresh", {"refresh": admin.refresh})
    assert first.status_code == 200
    assert first.json_body["refresh"] != admin.refresh
    new_access = first.json_body["access"]
    assert Api({"Authorization": f"Bearer {new_access}"}).get("/auth/me").status_code == 200


def test_reusing_a_rotated_refresh_token_revokes_the_whole_session(admin, anonymous):
    rotated = anonymous.post("/auth/token/refresh", {"refresh": admin.refresh}).json_body
    replay = anonymous.post("/auth/token/refresh", {"refresh": admin.refresh})
    assert replay.status_code == 401
    assert "already used" in replay.json_body["message"]
    # Every token of the family is now dead: the legitimate client's new ones too.
    assert Api({"Authorization": f"Bearer {rotated['access']}"}).get("/auth/me").status_code == 401
    assert anonymous.post("/auth/token/refresh", {"refresh": rotated["refresh"]}).status_code == 401
    assert TokenFamily.objects.get(user=admin.user).revoked_reason == "refresh token reuse"
    assert AuditLog.objects.filter(action="auth.refresh_reuse_detected").count() == 1


def test_access_token_is_not_a_refresh_token(admin, anonymous):
    response = anonymous.post("/auth/token/refresh", {"refresh": admin.access})
    assert response.status_code == 401


def test_logout_revokes_access_and_refresh_tokens(admin, anonymous):
    assert admin.api.post("/auth/logout").status_code == 204
    assert admin.api.get("/auth/me").status_code == 401
    assert anonymous.post("/auth/token/refresh", {"refresh": admin.refresh}).status_code == 401
    assert AuditLog.objects.filter(action="auth.logout").count() == 1


def test_logout_of_one_session_leaves_other_sessions_alone(admin):
    other_session = make_member(admin.tenant)  # another user entirely
    assert admin.api.post("/auth/logout").status_code == 204
    assert other_session.api.get("/auth/me").status_code == 200


def test_tampered_or_garbage_tokens_are_401(admin):
    header, payload, signature = admin.access.split(".")
    forged = f"{header}.{payload}.{signature[::-1]}"
    for token in (forged, "garbage", ""):
        response = Api({"Authorization": f"Bearer {token}"}).get("/auth/me")
        assert response.status_code == 401, token
        assert response.json_body["code"] == "AUTHENTICATION_FAILED"


def test_removed_member_token_stops_working(admin, trader):
    response = admin.api.delete(f"/tenants/current/members/{trader.user.memberships.get().id}")
    assert response.status_code == 204
    assert trader.api.get("/auth/me").status_code == 401


def test_suspended_tenant_cannot_sign_in_or_use_tokens(admin, anonymous):
    admin.tenant.status = "SUSPENDED"
    admin.tenant.save()
    assert admin.api.get("/auth/me").status_code == 401
    assert _login(anonymous, admin.user.email).status_code == 401
