"""The Celery app: Redis broker, named queues routed by app, beat schedule in the database."""

from __future__ import annotations

import os
from typing import Any

import structlog
from celery import Celery, signals
from celery.schedules import crontab
from kombu import Queue

from apps.common.context import set_trace_id

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oms.settings")

QUEUES = ("default", "orders", "marketdata", "reconcile", "webhooks", "allocator", "strategies")

app = Celery("oms")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_queues=[Queue(name) for name in QUEUES],
    task_default_queue="default",
    # Each app's tasks go to its own queue, so production can scale (or isolate) them apart.
    task_routes={
        "apps.orders.*": {"queue": "orders"},
        "apps.marketdata.*": {"queue": "marketdata"},
        "apps.portfolio.*": {"queue": "reconcile"},
        "apps.webhooks.*": {"queue": "webhooks"},
        "apps.allocator.*": {"queue": "allocator"},
        "apps.rebalancer.*": {"queue": "orders"},
        "apps.strategies.*": {"queue": "strategies"},
    },
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    result_expires=3600,
    broker_connection_retry_on_startup=True,
    beat_schedule={
        "partitions-maintain": {
            "task": "apps.common.tasks.partitions_maintain_task",
            "schedule": 6 * 3600.0,
        },
        # Jobs whose worker died (RUNNING past their deadline) or that no worker picked up.
        "allocator-jobs-reap": {
            "task": "apps.allocator.tasks.allocator_jobs_reap_task",
            "schedule": 60.0,
        },
        "orders-idempotency-purge": {
            "task": "apps.orders.tasks.idempotency_purge_task",
            "schedule": 3600.0,
        },
        # Orders still NEW 30 s after placement: their oms.submit may have been lost (Redis down).
        "orders-reroute": {
            "task": "apps.orders.tasks.orders_reroute_task",
            "schedule": 60.0,
        },
        # Backstop of run_risk_actions: cancel what active kill switches still cover.
        "orders-kill-switches-enforce": {
            "task": "apps.orders.tasks.kill_switches_enforce_task",
            "schedule": 30.0,
        },
        # Breakers that trip by themselves (reject storm, daily loss, stale market data, reconciliation
        # break), then the automatic resets (ACK_LATENCY trips as acknowledgements are applied).
        "risk-breakers-evaluate": {
            "task": "apps.risk.tasks.breakers_evaluate_task",
            "schedule": 15.0,
        },
        # Calendar-driven order handling: route orders held outside the session once it opens;
        # expire DAY orders at the session close and GTD orders at good_till.
        "orders-release-held": {
            "task": "apps.orders.tasks.orders_release_held_task",
            "schedule": 30.0,
        },
        "orders-expire": {
            "task": "apps.orders.tasks.orders_expire_task",
            "schedule": 30.0,
        },
        # The de-risk playbook (NORMAL → SOFT_DERISK → HARD_DERISK by the exchange clock) and the
        # order core's execution of its reduction intents; the exposure feed (ev.exposure).
        "risk-derisk-playbook": {
            "task": "apps.risk.tasks.derisk_playbook_task",
            "schedule": 15.0,
        },
        "orders-reduction-intents": {
            "task": "apps.orders.tasks.reduction_intents_task",
            "schedule": 10.0,
        },
        "risk-exposure-refresh": {
            "task": "apps.risk.tasks.exposure_refresh_task",
            "schedule": 5.0,
        },
        # The market data subscription union for the gateway again, in case Redis lost it.
        "marketdata-feed-publish": {
            "task": "apps.marketdata.tasks.feed_publish_task",
            "schedule": 60.0,
        },
        # Each account's P&L of the UTC day, after the US after-hours session has ended.
        "portfolio-pnl-snapshot": {
            "task": "apps.portfolio.tasks.pnl_snapshot_task",
            "schedule": crontab(hour=23, minute=55),
        },
    },
)
app.autodiscover_tasks()


@signals.before_task_publish.connect
def _propagate_trace_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Carry the publishing request's trace id into the task, so logs and audit rows join up."""
    trace_id = structlog.contextvars.get_contextvars().get("trace_id")
    if headers is not None and trace_id:
        headers["trace_id"] = trace_id


@signals.task_prerun.connect
def _bind_trace_id(task: Any = None, **_: Any) -> None:
    trace_id = getattr(task.request, "trace_id", None) if task else None
    if trace_id:
        set_trace_id(trace_id)
        structlog.contextvars.bind_contextvars(trace_id=trace_id, task=task.name)
    else:
        structlog.contextvars.clear_contextvars()


@signals.task_postrun.connect
def _unbind_trace_id(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()
