"""Periodic maintenance shared by every app."""

from __future__ import annotations

import structlog
from celery import shared_task
from django.conf import settings
from django.utils import timezone

from apps.common import partitioning

log = structlog.get_logger(__name__)


@shared_task(acks_late=True, soft_time_limit=300, time_limit=360)
def partitions_maintain_task() -> dict[str, dict[str, list[str]]]:
    """Create monthly partitions ahead and drop those past retention, for every partitioned table."""
    report = partitioning.maintain(now=timezone.now(), months_ahead=settings.PARTITIONS_AHEAD_MONTHS)
    log.info("partitions.maintained", report=report)
    return report
