"""Periodic work of the portfolio: the daily P&L snapshot."""

from __future__ import annotations

from datetime import date

import structlog
from celery import shared_task

from apps.portfolio.services import pnl_snapshot_take

log = structlog.get_logger(__name__)


@shared_task(acks_late=True, soft_time_limit=300, time_limit=360)
def pnl_snapshot_task(day: str | None = None) -> int:
    """Snapshot every account's P&L of `day` (ISO date; default today, UTC). Re-running refreshes it."""
    written = pnl_snapshot_take(day=date.fromisoformat(day) if day else None)
    log.info("portfolio.pnl_snapshot", accounts=written, day=day)
    return written
