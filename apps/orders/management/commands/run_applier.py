"""`manage.py run_applier`: the one writer of broker events, from `ib:events` into orders and positions.

It reads the stream in the consumer group `oms-applier` and applies each batch it reads in one
transaction (`broker_events_apply`), acknowledging only after the commit: a crash in between
redelivers the event, which the applier then finds already applied. Run one: events of an order
must be applied in the order the broker reported them.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any

import orjson
import redis
import structlog
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections, connection

from apps.common.errors import DomainError
from apps.common.redis import get_redis
from apps.events.streams import BROKER_EVENTS, StreamConsumer
from apps.orders.services.broker_events import (
    BrokerEvent,
    broker_event_apply,
    broker_event_decode,
    broker_events_apply,
)

log = structlog.get_logger("oms.applier")
GROUP = "oms-applier"


def apply_entries(consumer: StreamConsumer, entries: list[tuple[str, dict[str, str]]]) -> int:
    """Apply a batch of entries in order, acknowledging them once committed; return how many changed."""
    decoded: list[tuple[str, BrokerEvent | None]] = []
    for entry_id, fields in entries:
        try:
            decoded.append((entry_id, broker_event_decode(fields)))
        except (KeyError, ValueError, TypeError, orjson.JSONDecodeError) as exc:
            # A malformed entry will never apply: log it and move on rather than block the stream.
            log.error("applier.malformed", entry=entry_id, error=repr(exc), kind=fields.get("kind"))
            decoded.append((entry_id, None))
    events = [event for _, event in decoded if event is not None]
    try:
        applied = broker_events_apply(events=events) if events else 0
    except DomainError:
        # A broker anomaly (an over-fill, a move the state table forbids) rolled the batch back:
        # apply its events one by one, so that only the anomaly is refused.
        applied = 0
        for entry_id, event in decoded:
            if event is not None:
                try:
                    applied += broker_event_apply(event=event) is not None
                except DomainError as exc:
                    log.error("applier.refused", entry=entry_id, order_id=str(event.order_id), error=exc.message)
    consumer.ack(*(entry_id for entry_id, _ in decoded))
    return applied


class Command(BaseCommand):
    help = "Apply broker events from ib:events to orders, executions and positions (idempotent)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--block", type=int, default=1000, help="milliseconds to wait for new events")

    def handle(self, *args: Any, **options: Any) -> None:
        self.running = True
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        consumer = StreamConsumer(
            client=get_redis(),
            stream=BROKER_EVENTS,
            group=GROUP,
            consumer=f"{socket.gethostname()}-{os.getpid()}",
            claim_idle_ms=10_000,
            claim_every=2.0,  # a claim per read would cost a round trip per batch
        )
        log.info("applier.started", consumer=consumer.consumer)
        grouped = False
        while self.running:
            try:
                if not grouped:  # again after an error: Redis may have lost the group with its data
                    consumer.ensure_group()
                    grouped = True
                entries = consumer.read(count=100, block_ms=options["block"])
                if entries and not connection.in_atomic_block:
                    close_old_connections()  # a connection that broke or aged out while we waited
                    apply_entries(consumer, entries)
            except (redis.RedisError, DatabaseError) as exc:
                # Unacknowledged events stay pending; they are reclaimed and applied once we are back.
                log.warning("applier.retry", error=str(exc))
                grouped = False
                time.sleep(1.0)
        log.info("applier.stopped")

    def _stop(self, *_: Any) -> None:
        self.running = False
