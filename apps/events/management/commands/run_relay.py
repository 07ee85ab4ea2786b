"""`manage.py run_relay`: the outbox relay process, woken by PostgreSQL LISTEN/NOTIFY."""

from __future__ import annotations

import signal
import time
from typing import Any

import psycopg
import redis
import structlog
from django.core.management.base import BaseCommand
from django.db import DatabaseError, connection

from apps.common.redis import get_redis
from apps.events.relay import relay_pending, try_lead
from apps.events.services import NOTIFY_CHANNEL

log = structlog.get_logger("oms.relay")


class Command(BaseCommand):
    help = "Publish outbox rows to Redis Streams as they commit (LISTEN/NOTIFY), in order."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--poll", type=float, default=5.0, help="seconds between safety sweeps")
        parser.add_argument("--once", action="store_true", help="publish what is pending and exit")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["once"]:
            self.stdout.write(f"published {relay_pending(client=get_redis())} events")
            return
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.serve(poll=options["poll"])

    def serve(self, *, poll: float) -> None:
        """Publish until stopped: lead (or stand by), then sleep on NOTIFY between sweeps."""
        self.running = True
        client = get_redis()
        while self.running and not try_lead():
            log.info("relay.standby", reason="another relay holds the lock")
            time.sleep(poll)
        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        with psycopg.connect(**params, autocommit=True) as listener:
            listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            log.info("relay.started", channel=NOTIFY_CHANNEL)
            while self.running:
                try:
                    published = relay_pending(client=client)
                    if published:
                        log.info("relay.published", events=published)
                except (redis.RedisError, DatabaseError) as exc:
                    # Redis or the database is away: nothing is lost, the rows stay unpublished.
                    log.warning("relay.retry", error=str(exc))
                    time.sleep(1.0)
                    continue
                # Sleep until a transaction with outbox rows commits, or the safety sweep is due.
                for _ in listener.notifies(timeout=poll, stop_after=1):
                    pass
                # And take the other commits' notifications already here: one sweep publishes them all.
                for _ in listener.notifies(timeout=0):
                    pass

    def _stop(self, *_: Any) -> None:
        self.running = False
