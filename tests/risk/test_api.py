"""The risk and compliance CRUD endpoints: validation (422, never 500), conflicts, versions, audit."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from apps.audit.models import AuditLog
from apps.risk.models import RiskLimit


def test_limit_lifecycle_is_versioned_and_audited(manager):
    created = manager.api.post("/risk/limits", {"kind": "ORDER_RATE", "scope": "TENANT", "value": "10", "period": "1m"})
    assert created.status_code == 201
    assert {k: created.json_body[k] for k in ("kind", "value", "period", "version")} == {
        "kind": "ORDER_RATE",
        "value": "10",
        "period": "1m",
        "version": 1,
    }
    limit_id = created.json_body["id"]
    patched = manager.api.patch(f"/risk/limits/{limit_id}", {"value": 20, "period": "10s"})
    assert (patched.json_body["value"], patched.json_body["period"], patched.json_body["version"]) == ("20", "10s", 2)
    assert RiskLimit.objects.get(id=limit_id).period_seconds == 10
    assert manager.api.get("/risk/limits").json_body["items"][0]["id"] == limit_id
    assert manager.api.delete(f"/risk/limits/{limit_id}").status_code == 204
    actions = list(AuditLog.objects.filter(resource_type="risk_limit").order_by("seq").values_list("action", flat=True))
    assert actions == ["risk.limit.create", "risk.limit.update", "risk.limit.delete"]


def test_invalid_limits_are_422_and_duplicates_409(manager):
    cases = [
        ({"kind": "ORDER_RATE", "scope": "TENANT", "value": "10"}, "period"),
        ({"kind": "MAX_ORDER_QTY", "scope": "TENANT", "value": "10", "period": "1m"}, "period"),
        ({"kind": "ORDER_RATE", "scope": "TENANT", "value": "10", "period": "1y"}, "period"),
        ({"kind": "MAX_ORDER_QTY", "scope": "TENANT", "value": "-1"}, "value"),
        ({"kind": "MAX_ORDER_QTY", "scope": "TENANT", "value": 1.5}, "value"),
        ({"kind": "MAX_ORDER_QTY", "scope": "ACCOUNT", "value": "1"}, "scope_id"),
        ({"kind": "MAX_ORDER_QTY", "scope": "STRATEGY", "scope_id": "nope", "value": "1"}, "scope_id"),
        ({"kind": "NOPE", "scope": "TENANT", "value": "1"}, "kind"),
    ]
    for body, field in cases:
        response = manager.api.post("/risk/limits", body)
        assert response.status_code == 422, (body, response.json_body)
        assert field in response.json_body["details"], (body, response.json_body)
    body = {"kind": "MAX_ORDER_QTY", "scope": "INSTRUMENT", "scope_id": "aapl", "value": "5"}
    assert manager.api.post("/risk/limits", body).json_body["scope_id"] == "AAPL"
    duplicate = manager.api.post("/risk/limits", body)
    assert duplicate.status_code == 409 and duplicate.json_body["code"] == "STATE_CONFLICT"
    assert RiskLimit.objects.count() == 1


def test_override_window_is_bounded(manager):
    limit = manager.api.post("/risk/limits", {"kind": "MAX_ORDER_QTY", "scope": "TENANT", "value": "5"}).json_body
    too_long = (timezone.now() + timedelta(days=30)).isoformat()
    response = manager.api.post(
        "/risk/overrides", {"limit_id": limit["id"], "value": "9", "reason": "x", "valid_until": too_long}
    )
    assert response.status_code == 422 and "valid_until" in response.json_body["details"]
    past = (timezone.now() - timedelta(minutes=1)).isoformat()
    response = manager.api.post(
        "/risk/overrides", {"limit_id": limit["id"], "value": "9", "reason": "x", "valid_until": past}
    )
    assert response.status_code == 422


def test_kill_switch_scope_validation(manager):
    assert manager.api.post("/risk/kill-switch", {"scope": "TENANT", "scope_id": "x", "reason": "r"}).status_code == 422
    assert manager.api.post("/risk/kill-switch", {"scope": "ACCOUNT", "reason": "r"}).status_code == 422
    missing = manager.api.post(
        "/risk/kill-switch", {"scope": "ACCOUNT", "scope_id": "00000000-0000-0000-0000-000000000001", "reason": "r"}
    )
    assert missing.status_code == 404
    engaged = manager.api.post("/risk/kill-switch", {"scope": "TENANT", "reason": "halt all"})
    assert engaged.status_code == 201
    assert manager.api.delete(f"/risk/kill-switch/{engaged.json_body['id']}").status_code == 200
    assert manager.api.delete(f"/risk/kill-switch/{engaged.json_body['id']}").status_code == 409


def test_account_settings_patch(manager, account):
    response = manager.api.patch(f"/risk/accounts/{account.id}", {"capital": "250000", "calendar": "XNYS"})
    assert response.status_code == 200
    assert (response.json_body["capital"], response.json_body["calendar"], response.json_body["version"]) == (
        "250000",
        "XNYS",
        2,
    )
    bad = manager.api.patch(f"/risk/accounts/{account.id}", {"calendar": "MOON"})
    assert bad.status_code == 422 and "calendar" in bad.json_body["details"]


def test_compliance_rules_and_restricted_crud(manager, account):
    bad = manager.api.post("/compliance/rules", {"kind": "TRADING_HOURS", "params": {"closed_market": "MAYBE"}})
    assert bad.status_code == 422 and "params" in bad.json_body["details"]
    rule = manager.api.post("/compliance/rules", {"kind": "TRADING_HOURS", "params": {"closed_market": "REFUSE"}})
    assert rule.status_code == 201
    assert manager.api.post("/compliance/rules", {"kind": "TRADING_HOURS"}).status_code == 409
    patched = manager.api.patch(f"/compliance/rules/{rule.json_body['id']}", {"params": {"closed_market": "HOLD"}})
    assert (patched.json_body["params"], patched.json_body["version"]) == ({"closed_market": "HOLD"}, 2)
    window = manager.api.post(
        "/compliance/rules", {"kind": "RESTRICTED_HOURS", "params": {"start": "15:50", "end": "16:00"}}
    )
    assert window.json_body["params"]["timezone"] == "America/New_York"
    entry = manager.api.post(
        "/compliance/restricted", {"kind": "ACCOUNT", "value": str(account.id), "reason": "frozen"}
    )
    assert entry.status_code == 201
    until = (timezone.now() - timedelta(days=1)).isoformat()
    bad_window = manager.api.patch(
        f"/compliance/restricted/{entry.json_body['id']}",
        {"valid_from": timezone.now().isoformat(), "valid_until": until},
    )
    assert bad_window.status_code == 422
    assert manager.api.get("/compliance/restricted?kind=ACCOUNT").json_body["items"][0]["value"] == str(account.id)
    assert manager.api.delete(f"/compliance/restricted/{entry.json_body['id']}").status_code == 204
    assert AuditLog.objects.filter(action__startswith="compliance.").count() == 5
