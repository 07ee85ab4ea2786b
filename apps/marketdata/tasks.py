"""Periodic work of market data: republish the subscription union for the gateway."""

from __future__ import annotations

from celery import shared_task

from apps.marketdata.services import feed_publish


@shared_task(acks_late=True, soft_time_limit=30, time_limit=60)
def feed_publish_task() -> int:
    """Publish the union of every tenant's subscriptions again (Redis may have lost it); idempotent."""
    return feed_publish()
