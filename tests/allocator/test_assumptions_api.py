"""Per-tenant capital-market assumption overrides through the API."""

from __future__ import annotations

import pytest

from apps.allocator.models import AllocatorAssumptionOverride, AllocatorJob
from apps.audit.models import AuditLog
from apps.tenants.scopes import Role
from tests.allocator.jobs import small_body, submit
from tests.conftest import make_member

pytestmark = pytest.mark.django_db

OVERRIDES = {
    "asset_classes": {"us_equity": {"expected_return": 0.065, "volatility": 0.17}},
    "correlations": {"us_equity": {"bonds": 0.0}},
}


def test_defaults_are_shown_without_overrides(viewer):
    response = viewer.api.get("/allocator/assumptions")

    assert response.status_code == 200
    body = response.json_body
    assert body["overrides"] == {}
    assert body["updated_at"] is None
    assert body["effective"]["asset_classes"]["us_equity"] == {
        "label": "US equity",
        "expected_return": 0.07,
        "volatility": 0.16,
    }


def test_manager_sets_overrides_and_new_jobs_use_them(manager, trader, django_capture_on_commit_callbacks):
    before, _ = submit(trader, small_body(seed=1), django_capture_on_commit_callbacks)

    response = manager.api.request("PUT", "/allocator/assumptions", {"overrides": OVERRIDES})
    after, _ = submit(trader, small_body(seed=2), django_capture_on_commit_callbacks)

    assert response.status_code == 200
    assert response.json_body["overrides"] == OVERRIDES
    assert response.json_body["effective"]["asset_classes"]["us_equity"]["expected_return"] == 0.065
    assert response.json_body["effective"]["correlations"]["us_equity"]["bonds"] == 0.0
    assert AllocatorJob.objects.get(id=after.json_body["id"]).assumptions["asset_classes"]["us_equity"] == {
        "label": "US equity",
        "expected_return": 0.065,
        "volatility": 0.17,
    }
    # A job submitted before keeps the assumptions it was submitted with.
    assert AllocatorJob.objects.get(id=before.json_body["id"]).assumptions["asset_classes"]["us_equity"][
        "expected_return"
    ] == pytest.approx(0.07)
    entry = AuditLog.objects.get(action="allocator_assumptions.updated")
    assert (entry.actor_user_id, entry.before, entry.after) == (
        manager.user.id,
        {"overrides": {}},
        {"overrides": OVERRIDES},
    )


def test_inconsistent_correlations_are_a_422_and_change_nothing(manager):
    manager.api.request("PUT", "/allocator/assumptions", {"overrides": OVERRIDES})
    impossible = {
        "correlations": {
            "us_equity": {"intl_equity": 0.9, "bonds": 0.9},
            "intl_equity": {"bonds": -0.9},
        }
    }

    response = manager.api.request("PUT", "/allocator/assumptions", {"overrides": impossible})

    assert response.status_code == 422
    assert response.json_body["code"] == "VALIDATION_ERROR"
    [message] = response.json_body["details"]["assumptions.correlations"]
    assert message.startswith("must be positive semi-definite (smallest eigenvalue -")
    assert AllocatorAssumptionOverride.objects.get().overrides == OVERRIDES


def test_unknown_asset_class_is_a_422(manager):
    response = manager.api.request(
        "PUT", "/allocator/assumptions", {"overrides": {"asset_classes": {"gold": {"volatility": 0.2}}}}
    )

    assert response.status_code == 422
    assert response.json_body["details"] == {
        "assumptions.asset_classes.gold": ["is not an asset class (known: us_equity, intl_equity, bonds, cash)"]
    }


def test_trader_cannot_change_assumptions(trader):
    response = trader.api.request("PUT", "/allocator/assumptions", {"overrides": OVERRIDES})

    assert response.status_code == 403
    assert response.json_body["details"] == {"required_scope": ["tenants:manage"]}
    assert not AllocatorAssumptionOverride.objects.exists()


def test_overrides_are_per_tenant(manager, other_tenant):
    manager.api.request("PUT", "/allocator/assumptions", {"overrides": OVERRIDES})
    outsider = make_member(other_tenant, Role.VIEWER)

    assert outsider.api.get("/allocator/assumptions").json_body["overrides"] == {}
