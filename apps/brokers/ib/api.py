"""The `/reconciliation` router: reconciliation runs, each with every drift and its resolution."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from pydantic import ConfigDict

from apps.brokers.ib import runs
from apps.brokers.ib.models import ReconciliationRun
from apps.common.pagination import paginate
from apps.common.schemas import Page
from apps.tenants.auth import scoped
from apps.tenants.principal import viewer_kwargs

router = Router(tags=["reconciliation"])


class DriftOut(Schema):
    id: UUID
    kind: str
    action: str
    resolution: str
    order_id: UUID | None
    client_order_id: str
    perm_id: int | None
    con_id: int | None
    ours: dict[str, Any]
    ib: dict[str, Any]
    created_at: datetime


class RunOut(Schema):
    id: UUID
    account_id: UUID
    trigger: str
    status: str
    requested_by: str
    summary: dict[str, Any]
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    drifts: list[DriftOut] | None = None


class RunQuery(Schema):
    model_config = ConfigDict(extra="forbid")

    account_id: UUID | None = None
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=200)


def run_out(run: ReconciliationRun, *, drifts: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": run.id,
        "account_id": run.account_id,
        "trigger": run.trigger,
        "status": run.status,
        "requested_by": run.requested_by,
        "summary": run.summary,
        "error": run.error,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "drifts": None,
    }
    if drifts:
        body["drifts"] = [
            {
                "id": d.id,
                "kind": d.kind,
                "action": d.action,
                "resolution": d.resolution,
                "order_id": d.order_id,
                "client_order_id": d.client_order_id,
                "perm_id": d.perm_id,
                "con_id": d.con_id,
                "ours": d.ours,
                "ib": d.ib,
                "created_at": d.created_at,
            }
            for d in run.drifts.all().order_by("created_at", "id")
        ]
    return body


@router.get("/runs", response=Page[RunOut], auth=scoped("positions:view"))
def list_reconciliation_runs(request: HttpRequest, query: Query[RunQuery]) -> dict[str, Any]:
    found = runs.reconciliation_run_list(**viewer_kwargs(request), account_id=query.account_id)
    rows, next_cursor = paginate(found, limit=query.limit, cursor=query.cursor)
    return {"items": [run_out(row) for row in rows], "next": next_cursor}


@router.get("/runs/{run_id}", response=RunOut, auth=scoped("positions:view"))
def get_reconciliation_run(request: HttpRequest, run_id: UUID) -> dict[str, Any]:
    return run_out(runs.reconciliation_run_get(**viewer_kwargs(request), run_id=run_id), drifts=True)
