"""Helpers of the allocator's Django tests: small job bodies, local report storage, running jobs."""

from __future__ import annotations

import copy
from typing import Any

from apps.allocator.dispatch import job_enqueue
from tests.allocator.conftest import example_body


def small_body(**params: Any) -> dict[str, Any]:
    """The API.md example shrunk to run in about a second: 35 allocations, 10 years."""
    body = copy.deepcopy(example_body())
    body["params"].update({"n_sims": 300, "n_jobs": 2, "grid_step": 0.25, "horizon_years": 10, **params})
    return body


def envelopes(callbacks: list[Any]) -> list[dict[str, Any]]:
    """The signed envelopes that the captured on-commit callbacks would have enqueued."""
    return [callback.args[0] for callback in callbacks if getattr(callback, "func", None) is job_enqueue]


def submit(member: Any, body: dict[str, Any], django_capture_on_commit_callbacks: Any) -> tuple[Any, list[Any]]:
    """POST a job; return the response and the envelopes it would have enqueued."""
    with django_capture_on_commit_callbacks() as callbacks:
        response = member.api.post("/allocator/jobs", body)
    return response, envelopes(callbacks)
