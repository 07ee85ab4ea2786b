"""Signed, expiring download links for reports.

Local storage: a URL to our own download route carrying a `django.core.signing` token (tenant
and job, timestamped, salted) that is refused once older than `ALLOCATOR_REPORT_LINK_SECONDS`
or altered in any way. S3: a presigned URL with the same lifetime, so the file never passes
through our servers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any
from urllib.parse import urlencode
from uuid import UUID

from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils import timezone

from apps.allocator.models import AllocatorJob
from apps.allocator.storage import is_local, report_storage
from apps.common.errors import NotFound, PermissionDenied

SALT = "apps.allocator.report-link"
DOWNLOAD_ROUTE = "api-v1:download_allocator_report"
CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.presentationml.presentation"


@dataclass(frozen=True, slots=True)
class ReportLink:
    url: str  # absolute for S3; a path on this server for local storage
    expires_at: datetime
    storage: str  # "local" or "s3"


class LinkRefused(PermissionDenied):
    default_hint = "Ask GET /allocator/jobs/{id}/report for a fresh link"


def report_filename(job: AllocatorJob) -> str:
    return f"allocation-report-{str(job.id)[:8]}.pptx"


def report_link(job: AllocatorJob) -> ReportLink:
    """A link to `job`'s report valid for `ALLOCATOR_REPORT_LINK_SECONDS`."""
    seconds = settings.ALLOCATOR_REPORT_LINK_SECONDS
    expires_at = timezone.now() + timedelta(seconds=seconds)
    if is_local(report_storage):
        token = signing.dumps({"t": str(job.tenant_id), "j": str(job.id)}, salt=SALT)
        return ReportLink(f"{reverse(DOWNLOAD_ROUTE)}?{urlencode({'token': token})}", expires_at, "local")
    url = report_storage.url(
        job.report.name,
        expire=seconds,
        parameters={
            "ResponseContentDisposition": f'attachment; filename="{report_filename(job)}"',
            "ResponseContentType": CONTENT_TYPE,
        },
    )
    return ReportLink(url, expires_at, "s3")


def report_token_read(token: str) -> tuple[UUID, UUID]:
    """The (tenant id, job id) a download token names; `LinkRefused` (403) if expired or not ours."""
    try:
        data = signing.loads(token, salt=SALT, max_age=settings.ALLOCATOR_REPORT_LINK_SECONDS)
        return UUID(data["t"]), UUID(data["j"])
    except signing.SignatureExpired as exc:
        raise LinkRefused("This download link has expired", details={"reason": "expired"}) from exc
    except (signing.BadSignature, KeyError, TypeError, ValueError) as exc:
        raise LinkRefused("This download link is not valid", details={"reason": "invalid"}) from exc


def report_open(job: AllocatorJob) -> IO[Any]:
    """The report file of `job`, opened for reading; 404 if it is gone from the storage."""
    try:
        return report_storage.open(job.report.name, "rb")  # type: ignore[no-any-return]
    except FileNotFoundError as exc:
        raise NotFound("The report of this link no longer exists") from exc
