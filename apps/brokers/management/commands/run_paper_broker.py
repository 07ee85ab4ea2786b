"""`manage.py run_paper_broker`: the paper broker process for PAPER accounts (see apps.brokers.paper)."""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any

import redis
import structlog
from django.core.management.base import BaseCommand
from django.db import DatabaseError

from apps.brokers.paper.process import PaperBroker
from apps.common.redis import get_redis

log = structlog.get_logger("oms.paper")


class Command(BaseCommand):
    help = "Fill orders of PAPER accounts: consume their signed commands, publish broker events on ib:events."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--tick", type=float, default=0.25, help="seconds between price steps")
        parser.add_argument("--seed", type=int, default=42, help="seed of the random price walk")

    def handle(self, *args: Any, **options: Any) -> None:
        self.running = True
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        broker = PaperBroker(
            client=get_redis(),
            consumer=f"{socket.gethostname()}-{os.getpid()}",
            tick_seconds=options["tick"],
            seed=options["seed"],
        )
        log.info("paper.started", consumer=broker.consumer)
        while self.running:
            try:
                broker.run_once()
            except (redis.RedisError, DatabaseError) as exc:
                # Unacknowledged commands stay pending and are read again once the dependency is back.
                log.warning("paper.retry", error=str(exc))
                broker.reset()
                time.sleep(1.0)
        log.info("paper.stopped")

    def _stop(self, *_: Any) -> None:
        self.running = False
