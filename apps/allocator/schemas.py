"""API schemas of the allocator: jobs, report links and assumption overrides."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from ninja import Field, Schema
from pydantic import ConfigDict

from apps.allocator.household import EXAMPLE_REQUEST
from apps.allocator.models import AllocatorJob
from apps.allocator.state import JobState
from apps.tenants.schemas import ListQuery, StrictIn


class JobIn(StrictIn):
    """A household and how to run; every member is checked, and all problems come back at once."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": EXAMPLE_REQUEST})

    household: dict[str, Any] = Field(
        description="current_age, retirement_age, assets {taxable, tax_deferred, tax_free}, annual_contribution, "
        "annual_spending, other_income [{annual_amount, start_age, end_age?}], goals [{amount, years_from_now}]; "
        "money as decimal strings in today's money"
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="n_sims (100..200000), n_jobs (1..64), grid_step (0.01..0.5, 1/step whole), payout_rate "
        "(null or 0..0.25, replaces annual_spending), horizon_years (1..60), inflation, seed, rebalance",
    )


class JobListQuery(ListQuery):
    state: JobState | None = None


class JobOut(Schema):
    id: UUID
    state: JobState
    progress: float = Field(description="percent done")
    stage: str
    attempts: int
    error: str | None = Field(description="why the job failed, in plain words")
    summary: dict[str, Any] | None = Field(description="the recommendation and the efficient set, once SUCCEEDED")
    has_report: bool
    request: dict[str, Any]
    idempotency_key: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deadline: datetime | None

    @staticmethod
    def resolve_error(job: AllocatorJob) -> str | None:
        return job.error or None

    @staticmethod
    def resolve_request(job: AllocatorJob) -> dict[str, Any]:
        return dict(job.payload)


class ReportLinkOut(Schema):
    url: str = Field(description="GET it within the lifetime of the link; no credentials needed")
    expires_at: datetime


class DownloadQuery(StrictIn):
    token: str = Field(min_length=1, max_length=1000)


class AssumptionsIn(StrictIn):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "overrides": {
                    "asset_classes": {"us_equity": {"expected_return": 0.065, "volatility": 0.17}},
                    "correlations": {"us_equity": {"bonds": 0.0}},
                }
            }
        },
    )

    overrides: dict[str, Any] = Field(description="changes to the defaults; {} restores them")


class AssumptionsOut(Schema):
    overrides: dict[str, Any]
    effective: dict[str, Any] = Field(description="the defaults with the overrides applied, as new jobs use them")
    updated_at: datetime | None
