"""`manage.py run_risk_actions`: carry out what risk announces on `ev.risk` (kill switch cancellations).

Risk records a kill switch and emits `risk.kill_switch.engaged`; this consumer (group
`oms-risk-actions`) cancels the working orders in scope and acknowledges the entry after the
cancellations committed. Enforcement is idempotent, so a redelivery does no harm, and the beat
task `kill_switches_enforce_task` sweeps active switches as a backstop if this process was down.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Any
from uuid import UUID

import orjson
import redis
import structlog
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections

from apps.common.errors import DomainError
from apps.common.redis import get_redis
from apps.events.streams import RISK, StreamConsumer
from apps.orders.services.risk import kill_switch_enforce
from apps.risk.services.controls import KILL_SWITCH_ENGAGED

log = structlog.get_logger("oms.risk_actions")
GROUP = "oms-risk-actions"


def act_on_entries(consumer: StreamConsumer, entries: list[tuple[str, dict[str, str]]]) -> int:
    """Enforce every kill switch announced in `entries`; acknowledge each once handled."""
    enforced = 0
    for entry_id, fields in entries:
        if fields.get("kind") == KILL_SWITCH_ENGAGED:
            try:
                kill_switch_enforce(kill_switch_id=UUID(orjson.loads(fields["payload"])["id"]))
                enforced += 1
            except (KeyError, ValueError, orjson.JSONDecodeError, DomainError) as exc:
                log.error("risk_actions.malformed", entry=entry_id, error=repr(exc))
        consumer.ack(entry_id)
    return enforced


class Command(BaseCommand):
    help = "Cancel the working orders of engaged kill switches (consumes ev.risk)."

    def handle(self, *args: Any, **options: Any) -> None:
        self.running = True
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        consumer = StreamConsumer(
            client=get_redis(), stream=RISK, group=GROUP, consumer=f"{socket.gethostname()}-{os.getpid()}"
        )
        grouped = False
        while self.running:
            try:
                if not grouped:
                    consumer.ensure_group()
                    grouped = True
                entries = consumer.read(count=50, block_ms=1000)
                close_old_connections()
                act_on_entries(consumer, entries)
            except (redis.RedisError, DatabaseError) as exc:
                grouped = False
                log.warning("risk_actions.retry", error=str(exc))
                self._sleep()

    def _sleep(self) -> None:
        signal.sigtimedwait([signal.SIGTERM, signal.SIGINT], 1.0)

    def _stop(self, *_: Any) -> None:
        self.running = False
