"""The jobs API without a worker: submit, idempotency, validation, tenancy, scopes, cancel, list."""

from __future__ import annotations

import pytest

from apps.allocator.dispatch import ENVELOPE_KIND, signing_key
from apps.allocator.envelope import EnvelopeRejected, envelope_verify
from apps.allocator.models import AllocatorJob
from apps.audit.models import AuditLog
from apps.tenants.scopes import Role
from tests.allocator.jobs import small_body, submit
from tests.conftest import make_member

pytestmark = pytest.mark.django_db


def test_submit_queues_the_job_and_signs_its_envelope(trader, django_capture_on_commit_callbacks):
    body = small_body()

    response, sent = submit(trader, body, django_capture_on_commit_callbacks)

    assert response.status_code == 202
    job = response.json_body
    assert job["state"] == "QUEUED"
    assert job["progress"] == 0.0
    assert job["stage"] == "queued"
    assert job["summary"] is None
    assert job["error"] is None
    assert job["has_report"] is False
    assert job["request"] == body
    assert len(sent) == 1
    assert envelope_verify(sent[0], kind=ENVELOPE_KIND, key=signing_key()) == {
        "job_id": job["id"],
        "tenant_id": str(trader.tenant.id),
        "payload": body,
    }
    row = AllocatorJob.objects.get(id=job["id"])
    assert row.tenant == trader.tenant
    assert row.created_by == trader.user
    assert row.assumptions["asset_classes"]["us_equity"]["expected_return"] == 0.07
    entry = AuditLog.objects.get(action="allocator_job.submitted")
    assert (entry.tenant_id, entry.resource_id, entry.actor_user_id) == (trader.tenant.id, job["id"], trader.user.id)


def test_envelope_with_an_altered_payload_is_rejected(trader, django_capture_on_commit_callbacks):
    _, sent = submit(trader, small_body(), django_capture_on_commit_callbacks)
    forged = {**sent[0], "body": {**sent[0]["body"], "payload": small_body(n_sims=200_000)}}

    with pytest.raises(EnvelopeRejected, match="signature does not match"):
        envelope_verify(forged, kind=ENVELOPE_KIND, key=signing_key())


def test_same_submission_returns_the_same_job(trader, django_capture_on_commit_callbacks):
    first, _ = submit(trader, small_body(), django_capture_on_commit_callbacks)
    # The same meaning in another spelling: keys reordered, an amount as an integer, a default made explicit.
    again = small_body()
    again["household"]["annual_spending"] = 60000
    again["params"]["rebalance"] = True
    again = {"params": again["params"], "household": again["household"]}

    second, sent = submit(trader, again, django_capture_on_commit_callbacks)

    assert second.status_code == 202
    assert second.json_body["id"] == first.json_body["id"]
    assert second["Idempotent-Replayed"] == "true"
    assert sent == []
    assert AllocatorJob.objects.count() == 1


def test_same_submission_in_another_tenant_is_another_job(trader, other_tenant, django_capture_on_commit_callbacks):
    outsider = make_member(other_tenant, Role.TRADER)
    first, _ = submit(trader, small_body(), django_capture_on_commit_callbacks)

    second, _ = submit(outsider, small_body(), django_capture_on_commit_callbacks)

    assert second.json_body["id"] != first.json_body["id"]


def test_a_different_seed_is_a_different_job(trader, django_capture_on_commit_callbacks):
    first, _ = submit(trader, small_body(seed=1), django_capture_on_commit_callbacks)
    second, _ = submit(trader, small_body(seed=2), django_capture_on_commit_callbacks)

    assert second.json_body["id"] != first.json_body["id"]


def test_canceled_submission_can_be_submitted_again(trader, django_capture_on_commit_callbacks):
    first, _ = submit(trader, small_body(), django_capture_on_commit_callbacks)
    trader.api.post(f"/allocator/jobs/{first.json_body['id']}/cancel")

    second, sent = submit(trader, small_body(), django_capture_on_commit_callbacks)

    assert second.json_body["id"] != first.json_body["id"]
    assert second.json_body["state"] == "QUEUED"
    assert len(sent) == 1


def test_invalid_household_is_a_422_listing_every_field(trader, django_capture_on_commit_callbacks):
    body = small_body(n_sims=5, grid_step=0.3)
    body["household"]["retirement_age"] = 50
    body["household"]["assets"]["taxable"] = "12.345"
    body["household"]["retirment_age"] = 65

    response, sent = submit(trader, body, django_capture_on_commit_callbacks)

    assert response.status_code == 422
    error = response.json_body
    assert error["code"] == "VALIDATION_ERROR"
    assert error["message"] == "Invalid allocator request"
    assert error["details"] == {
        "params.n_sims": ["must be between 100 and 200000"],
        "params.grid_step": ["must divide 1 into a whole number of steps (1/0.3 = 3.333)"],
        "household.retirement_age": ["must be >= current_age"],
        "household.assets.taxable": ["must have at most 2 decimal places"],
        "household.retirment_age": ["is not a known field"],
    }
    assert sent == []
    assert AllocatorJob.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "details"),
    [
        ({"params": {}}, {"household": ["Field required"]}),
        ({"household": {}, "extra": 1}, {"extra": ["unknown field"]}),
        ({"household": "old"}, {"household": ["Input should be a valid dictionary"]}),
    ],
)
def test_malformed_body_is_a_422(trader, body, details):
    response = trader.api.post("/allocator/jobs", body)

    assert response.status_code == 422
    assert response.json_body["details"] == details


def test_body_that_is_not_json_is_a_400(trader):
    response = trader.api.client.post(
        "/api/v1/allocator/jobs", data=b"{nope", content_type="application/json", headers=trader.api.headers
    )

    assert response.status_code == 400
    assert response.json()["code"] == "MALFORMED_REQUEST"


def test_viewer_cannot_submit_or_cancel(viewer, trader, django_capture_on_commit_callbacks):
    job, _ = submit(trader, small_body(), django_capture_on_commit_callbacks)

    submitted = viewer.api.post("/allocator/jobs", small_body(seed=9))
    canceled = viewer.api.post(f"/allocator/jobs/{job.json_body['id']}/cancel")

    assert submitted.status_code == 403
    assert submitted.json_body["code"] == "PERMISSION_DENIED"
    assert submitted.json_body["details"] == {"required_scope": ["allocator:run"]}
    assert canceled.status_code == 403
    assert AllocatorJob.objects.get().state == "QUEUED"
    assert AllocatorJob.objects.count() == 1


def test_viewer_reads_jobs(viewer, trader, django_capture_on_commit_callbacks):
    job, _ = submit(trader, small_body(), django_capture_on_commit_callbacks)

    response = viewer.api.get(f"/allocator/jobs/{job.json_body['id']}")

    assert response.status_code == 200
    assert response.json_body["id"] == job.json_body["id"]


def test_anonymous_is_a_401(anonymous):
    assert anonymous.get("/allocator/jobs").status_code == 401


def test_another_tenants_job_is_a_404_everywhere(trader, other_tenant, django_capture_on_commit_callbacks):
    job, _ = submit(trader, small_body(), django_capture_on_commit_callbacks)
    outsider = make_member(other_tenant, Role.ADMIN)
    job_id = job.json_body["id"]

    responses = [
        outsider.api.get(f"/allocator/jobs/{job_id}"),
        outsider.api.post(f"/allocator/jobs/{job_id}/cancel"),
        outsider.api.get(f"/allocator/jobs/{job_id}/report"),
    ]

    assert [r.status_code for r in responses] == [404, 404, 404]
    assert responses[0].json_body["message"] == f"Allocator job {job_id} not found"
    assert outsider.api.get("/allocator/jobs").json_body == {"items": [], "next": None}
    assert AllocatorJob.objects.get().state == "QUEUED"


def test_cancel_a_queued_job_then_409(trader, django_capture_on_commit_callbacks):
    job, _ = submit(trader, small_body(), django_capture_on_commit_callbacks)
    job_id = job.json_body["id"]

    canceled = trader.api.post(f"/allocator/jobs/{job_id}/cancel")
    again = trader.api.post(f"/allocator/jobs/{job_id}/cancel")

    assert canceled.status_code == 200
    assert canceled.json_body["state"] == "CANCELED"
    assert canceled.json_body["finished_at"] is not None
    assert again.status_code == 409
    assert again.json_body["code"] == "STATE_CONFLICT"
    assert again.json_body["message"] == (
        f"Job {job_id} has already finished (CANCELED); only QUEUED or RUNNING jobs can be canceled"
    )
    assert again.json_body["details"] == {"state": "CANCELED"}
    assert AuditLog.objects.filter(action="allocator_job.canceled").count() == 1


def test_report_of_an_unfinished_job_is_a_409(trader, django_capture_on_commit_callbacks):
    job, _ = submit(trader, small_body(), django_capture_on_commit_callbacks)

    response = trader.api.get(f"/allocator/jobs/{job.json_body['id']}/report")

    assert response.status_code == 409
    assert response.json_body["code"] == "STATE_CONFLICT"
    assert "is QUEUED; its report exists once it has SUCCEEDED" in response.json_body["message"]


def test_list_filters_by_state_and_pages_newest_first(trader, django_capture_on_commit_callbacks):
    ids = [
        submit(trader, small_body(seed=seed), django_capture_on_commit_callbacks)[0].json_body["id"]
        for seed in range(3)
    ]
    trader.api.post(f"/allocator/jobs/{ids[0]}/cancel")

    page = trader.api.get("/allocator/jobs?limit=2").json_body
    rest = trader.api.get(f"/allocator/jobs?limit=2&cursor={page['next']}").json_body
    queued = trader.api.get("/allocator/jobs?state=QUEUED").json_body

    assert [item["id"] for item in page["items"]] == [ids[2], ids[1]]
    assert [item["id"] for item in rest["items"]] == [ids[0]]
    assert rest["next"] is None
    assert [item["id"] for item in queued["items"]] == [ids[2], ids[1]]


@pytest.mark.parametrize(
    ("query", "field"), [("state=DONE", "state"), ("limit=0", "limit"), ("status=QUEUED", "status")]
)
def test_list_refuses_bad_filters(trader, query, field):
    response = trader.api.get(f"/allocator/jobs?{query}")

    assert response.status_code == 422
    assert list(response.json_body["details"]) == [field]


def test_unknown_job_id_is_a_404_and_a_malformed_one_a_422(trader):
    assert trader.api.get("/allocator/jobs/00000000-0000-0000-0000-000000000000").status_code == 404
    assert trader.api.get("/allocator/jobs/not-a-uuid").status_code == 422
