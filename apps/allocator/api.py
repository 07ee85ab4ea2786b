"""Router of the household allocator (`/allocator`)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.http import FileResponse, HttpRequest, HttpResponse
from ninja import Query, Router, Status

from apps.allocator import links, selectors, services
from apps.allocator.schemas import (
    AssumptionsIn,
    AssumptionsOut,
    DownloadQuery,
    JobIn,
    JobListQuery,
    JobOut,
    ReportLinkOut,
)
from apps.common.pagination import paginate
from apps.common.schemas import Page
from apps.tenants.auth import scoped
from apps.tenants.principal import Principal

router = Router(tags=["allocator"])


@router.post("/jobs", response={202: JobOut}, auth=scoped("allocator:run"))
def submit_allocator_job(request: HttpRequest, response: HttpResponse, payload: JobIn) -> Status:
    principal: Principal = request.auth  # type: ignore[attr-defined]
    submission = services.allocator_job_submit(
        tenant=principal.tenant, actor=principal.actor, user=principal.user, payload=payload.model_dump()
    )
    if not submission.created:
        response["Idempotent-Replayed"] = "true"
    return Status(202, submission.job)


@router.get("/jobs", response=Page[JobOut], auth=scoped("allocator:view"))
def list_allocator_jobs(request: HttpRequest, query: Query[JobListQuery]) -> dict[str, Any]:
    jobs = selectors.allocator_job_list(tenant=request.auth.tenant, state=query.state)  # type: ignore[attr-defined]
    rows, next_cursor = paginate(jobs, limit=query.limit, cursor=query.cursor)
    return {"items": rows, "next": next_cursor}


@router.get("/jobs/{job_id}", response=JobOut, auth=scoped("allocator:view"))
def get_allocator_job(request: HttpRequest, job_id: UUID) -> Any:
    return selectors.allocator_job_get(tenant=request.auth.tenant, job_id=job_id)  # type: ignore[attr-defined]


@router.post("/jobs/{job_id}/cancel", response=JobOut, auth=scoped("allocator:run"))
def cancel_allocator_job(request: HttpRequest, job_id: UUID) -> Any:
    principal: Principal = request.auth  # type: ignore[attr-defined]
    return services.allocator_job_cancel(tenant=principal.tenant, actor=principal.actor, job_id=job_id)


@router.get("/jobs/{job_id}/report", response=ReportLinkOut, auth=scoped("allocator:view"))
def get_allocator_report_link(request: HttpRequest, job_id: UUID) -> dict[str, Any]:
    principal: Principal = request.auth  # type: ignore[attr-defined]
    link = services.allocator_report_link_issue(tenant=principal.tenant, actor=principal.actor, job_id=job_id)
    return {"url": request.build_absolute_uri(link.url), "expires_at": link.expires_at}


@router.get("/reports/download", auth=None, url_name="download_allocator_report", response={200: None})
def download_allocator_report(request: HttpRequest, query: Query[DownloadQuery]) -> HttpResponse:
    """Serve a report from local storage; the signed token in the link is the credential."""
    tenant_id, job_id = links.report_token_read(query.token)
    job = selectors.allocator_report_job(tenant_id=tenant_id, job_id=job_id)
    response = FileResponse(
        links.report_open(job),
        as_attachment=True,
        filename=links.report_filename(job),
        content_type=links.CONTENT_TYPE,
    )
    response["Cache-Control"] = "private, no-store"
    return response


def _assumptions_out(principal: Principal) -> dict[str, Any]:
    row = selectors.allocator_overrides_get(tenant=principal.tenant)
    return {
        "overrides": row.overrides if row else {},
        "effective": selectors.allocator_assumptions_effective(tenant=principal.tenant).as_dict(),
        "updated_at": row.updated_at if row else None,
    }


@router.get("/assumptions", response=AssumptionsOut, auth=scoped("allocator:view"))
def get_allocator_assumptions(request: HttpRequest) -> dict[str, Any]:
    return _assumptions_out(request.auth)  # type: ignore[attr-defined]


@router.put("/assumptions", response=AssumptionsOut, auth=scoped("tenants:manage"))
def set_allocator_assumptions(request: HttpRequest, payload: AssumptionsIn) -> dict[str, Any]:
    principal: Principal = request.auth  # type: ignore[attr-defined]
    services.allocator_assumptions_set(
        tenant=principal.tenant, actor=principal.actor, user=principal.user, overrides=payload.overrides
    )
    return _assumptions_out(principal)
