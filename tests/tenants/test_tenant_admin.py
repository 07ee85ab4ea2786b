"""Tenant settings, members and invitations."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.audit.models import AuditLog
from apps.tenants.models import Invitation, Membership, Tenant, User
from apps.tenants.scopes import Role
from tests.conftest import Api, make_member

pytestmark = pytest.mark.django_db


def test_admin_updates_tenant_settings_and_it_is_audited(admin):
    response = admin.api.patch(
        "/tenants/current",
        {"name": "Renamed", "display_timezone": "America/New_York", "ip_allowlist": ["127.0.0.1/32"]},
    )
    assert response.status_code == 200
    assert response.json_body["display_timezone"] == "America/New_York"
    entry = AuditLog.objects.get(action="tenant.updated")
    assert entry.before["name"] != "Renamed"
    assert entry.after["name"] == "Renamed"
    assert entry.after["ip_allowlist"] == ["127.0.0.1/32"]


def test_invalid_tenant_settings_are_422_and_nothing_changes(admin):
    response = admin.api.patch(
        "/tenants/current", {"display_timezone": "Mars/Olympus", "ip_allowlist": ["10.0.0.0/8", "bogus"]}
    )
    assert response.status_code == 422
    assert response.json_body["details"] == {
        "display_timezone": ["unknown time zone 'Mars/Olympus'"],
        "ip_allowlist.1": ["'bogus' is not an IP address or CIDR block"],
    }
    assert Tenant.objects.get(id=admin.tenant.id).display_timezone == "UTC"
    assert not AuditLog.objects.filter(action="tenant.updated").exists()


def test_unknown_field_in_body_is_422(admin):
    response = admin.api.patch("/tenants/current", {"nmae": "typo"})
    assert response.status_code == 422
    assert response.json_body["details"] == {"nmae": ["unknown field"]}


def test_manager_cannot_change_tenant_settings(manager):
    assert manager.api.patch("/tenants/current", {"name": "x"}).status_code == 403


def test_members_list_pages_newest_first_with_every_field(admin, other_tenant):
    members = [admin] + [make_member(admin.tenant, Role.VIEWER) for _ in range(4)]
    make_member(other_tenant, Role.ADMIN)  # never listed here
    same_time = timezone.now()  # a tie on created_at: the id decides the order
    Membership.objects.filter(user__in=[m.user for m in members[3:]]).update(created_at=same_time)
    User.objects.filter(id=members[1].user.id).update(full_name="Named", totp_confirmed_at=timezone.now())
    expected = list(
        Membership.objects.filter(tenant=admin.tenant).order_by("-created_at", "-id").select_related("user")
    )
    seen, cursor = [], None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = admin.api.get(f"/tenants/current/members{query}").json_body
        assert len(page["items"]) <= 2
        seen += page["items"]
        cursor = page["next"]
        if cursor is None:
            break
    assert [item["id"] for item in seen] == [str(m.id) for m in expected]
    named = next(item for item in seen if item["user_id"] == str(members[1].user.id))
    membership = Membership.objects.get(user=members[1].user)
    assert named == {
        "id": str(membership.id),
        "user_id": str(members[1].user.id),
        "email": members[1].user.email,
        "full_name": "Named",
        "role": "VIEWER",
        "mfa_enabled": True,
        "created_at": membership.created_at.isoformat().replace("+00:00", "Z"),
    }
    bad = admin.api.get("/tenants/current/members?cursor=garbage")
    assert bad.status_code == 422 and bad.json_body["details"] == {"cursor": ["not a cursor this API issued"]}


def test_members_list_add_change_remove(admin, db):
    outsider = User.objects.create_user("outsider@example.com", "pw-long-enough-1")
    added = admin.api.post("/tenants/current/members", {"email": "outsider@example.com", "role": "TRADER"})
    assert added.status_code == 201
    assert added.json_body["role"] == "TRADER"
    listed = admin.api.get("/tenants/current/members").json_body
    assert sorted(item["email"] for item in listed["items"]) == sorted([admin.user.email, outsider.email])
    changed = admin.api.patch(f"/tenants/current/members/{added.json_body['id']}", {"role": "VIEWER"})
    assert changed.json_body["role"] == "VIEWER"
    assert admin.api.delete(f"/tenants/current/members/{added.json_body['id']}").status_code == 204
    assert not Membership.objects.filter(user=outsider).exists()
    actions = list(
        AuditLog.objects.filter(action__startswith="membership.").order_by("seq").values_list("action", flat=True)
    )
    assert actions == ["membership.created", "membership.updated", "membership.deleted"]


def test_adding_a_member_twice_is_409(admin, trader):
    response = admin.api.post("/tenants/current/members", {"email": trader.user.email, "role": "VIEWER"})
    assert response.status_code == 409


def test_manager_cannot_grant_or_touch_admin(manager, admin, db):
    User.objects.create_user("new@example.com", "pw-long-enough-1")
    refused = manager.api.post("/tenants/current/members", {"email": "new@example.com", "role": "ADMIN"})
    assert refused.status_code == 403
    admin_membership = admin.user.memberships.get()
    assert manager.api.patch(f"/tenants/current/members/{admin_membership.id}", {"role": "VIEWER"}).status_code == 403
    assert Membership.objects.get(id=admin_membership.id).role == Role.ADMIN


def test_the_last_admin_cannot_be_demoted_or_removed(admin):
    membership = admin.user.memberships.get()
    assert admin.api.patch(f"/tenants/current/members/{membership.id}", {"role": "VIEWER"}).status_code == 409
    assert admin.api.delete(f"/tenants/current/members/{membership.id}").status_code == 409
    assert Membership.objects.get(id=membership.id).role == Role.ADMIN


def test_invitation_accepted_by_a_new_user_creates_account_and_membership(admin, anonymous):
    created = admin.api.post("/tenants/current/invitations", {"email": "Newbie@Example.com", "role": "TRADER"})
    assert created.status_code == 201
    token = created.json_body["token"]
    assert Invitation.objects.get(id=created.json_body["id"]).token_hash != token
    weak = anonymous.post("/tenants/invitations/accept", {"token": token, "password": "123"})
    assert weak.status_code == 422
    assert "password" in weak.json_body["details"]
    accepted = anonymous.post("/tenants/invitations/accept", {"token": token, "password": "a-good-long-pass-7"})
    assert accepted.status_code == 201
    assert accepted.json_body["email"] == "newbie@example.com"
    assert accepted.json_body["role"] == "TRADER"
    again = anonymous.post("/tenants/invitations/accept", {"token": token, "password": "a-good-long-pass-7"})
    assert again.status_code == 409
    login = anonymous.post("/auth/token", {"username": "newbie@example.com", "password": "a-good-long-pass-7"})
    assert login.status_code == 200


def test_expired_or_revoked_invitation_cannot_be_accepted(admin, anonymous):
    expired = admin.api.post("/tenants/current/invitations", {"email": "a@example.com", "role": "VIEWER"}).json_body
    Invitation.objects.filter(id=expired["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = anonymous.post("/tenants/invitations/accept", {"token": expired["token"], "password": "long-pass-123x"})
    assert response.status_code == 409
    assert "expired" in response.json_body["message"]
    revoked = admin.api.post("/tenants/current/invitations", {"email": "b@example.com", "role": "VIEWER"}).json_body
    assert admin.api.delete(f"/tenants/current/invitations/{revoked['id']}").status_code == 204
    response = anonymous.post("/tenants/invitations/accept", {"token": revoked["token"], "password": "long-pass-123x"})
    assert response.status_code == 404
    assert not User.objects.filter(email__in=["a@example.com", "b@example.com"]).exists()


def test_trader_cannot_invite(trader):
    assert (
        trader.api.post("/tenants/current/invitations", {"email": "x@example.com", "role": "VIEWER"}).status_code == 403
    )
    assert not Invitation.objects.exists()


def test_list_pagination_walks_every_member_once(admin):
    for index in range(7):
        User.objects.create_user(f"m{index}@example.com", "pw-long-enough-1")
        admin.api.post("/tenants/current/members", {"email": f"m{index}@example.com", "role": "VIEWER"})
    seen, cursor = [], None
    while True:
        page = admin.api.get("/tenants/current/members?limit=3" + (f"&cursor={cursor}" if cursor else "")).json_body
        seen += [item["id"] for item in page["items"]]
        cursor = page["next"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 8
    assert admin.api.get("/tenants/current/members?limit=0").status_code == 422
    assert admin.api.get("/tenants/current/members?limit=501").status_code == 422
    assert admin.api.get("/tenants/current/members?cursor=nonsense").status_code == 422


def test_create_tenant_command_is_idempotent(db, capsys):
    args = ["acme", "--name", "Acme", "--admin-email", "boss@acme.example", "--admin-password", "pw-long-enough-1"]
    call_command("create_tenant", *args)
    first = capsys.readouterr().out.strip()
    call_command("create_tenant", *args)
    second = capsys.readouterr().out.strip()
    assert first == second == str(Tenant.objects.get(slug="acme").id)
    assert Membership.objects.get(tenant__slug="acme").role == Role.ADMIN
    assert AuditLog.objects.filter(action="tenant.provisioned").count() == 1


def test_seed_demo_creates_the_documented_credentials(db):
    call_command("seed_demo")
    call_command("seed_demo")
    response = Api().post("/auth/token", {"username": "admin@demo.example", "password": "demo-admin-pass"})
    assert response.status_code == 200
    assert Tenant.objects.filter(slug="demo").count() == 1


def test_null_for_a_required_setting_is_422_not_500(admin):
    response = admin.api.patch("/tenants/current", {"display_timezone": None, "ip_allowlist": None})
    assert response.status_code == 422
    assert response.json_body["details"] == {
        "display_timezone": ["must not be null"],
        "ip_allowlist": ["must not be null (send [] to clear)"],
    }
