"""Django's session, CSRF, user and messages middleware serve the admin and skip the API."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.tenants.models import User

pytestmark = pytest.mark.django_db


def test_api_responses_set_no_cookies_and_keep_the_security_headers(admin):
    response = admin.api.get("/auth/me")
    assert response.status_code == 200
    assert not response.cookies
    assert "Cookie" not in response.get("Vary", "")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_an_admin_session_does_not_authenticate_the_api(db):
    staff = User.objects.create_superuser("ops-session@example.com", "ops-password-123")
    browser = Client()
    browser.force_login(staff)
    assert browser.get("/admin/").status_code == 200
    response = browser.get("/api/v1/auth/me")
    assert response.status_code == 401
    assert not response.cookies


def test_the_admin_keeps_csrf_sessions_and_messages(db):
    User.objects.create_superuser("ops-csrf@example.com", "ops-password-123")
    browser = Client(enforce_csrf_checks=True)
    login_page = browser.get("/admin/login/")
    assert login_page.status_code == 200 and "csrftoken" in login_page.cookies
    credentials = {"username": "ops-csrf@example.com", "password": "ops-password-123", "next": "/admin/"}
    assert browser.post("/admin/login/", credentials).status_code == 403  # no CSRF token
    token = login_page.cookies["csrftoken"].value
    signed_in = browser.post("/admin/login/", {**credentials, "csrfmiddlewaretoken": token})
    assert signed_in.status_code == 302 and "sessionid" in signed_in.cookies
    assert browser.get("/admin/").status_code == 200


def test_api_posts_need_no_csrf_token(admin):
    browser = Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {admin.access}"})
    response = browser.post(
        "/api/v1/tenants/current/invitations",
        {"email": "x@example.com", "role": "VIEWER"},
        content_type="application/json",
    )
    assert response.status_code == 201
