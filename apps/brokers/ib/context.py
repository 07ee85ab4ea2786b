"""What every part of one gateway shares: its settings, the ib_async client, the pacer, and the
bridges from the event loop to the database and Redis (each a thread of its own, so blocking
Django and redis-py calls never stall ib_async's loop, and each runs its work in order)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar
from uuid import UUID

import redis
from django.db import close_old_connections, connections

from apps.brokers.ib import wire
from apps.brokers.ib.pacing import Pacer, TokenBucket
from apps.events.streams import BROKER_EVENTS

log = logging.getLogger("apps.brokers.ib")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """One gateway: the account it serves and the IB login (host, port, client id) it uses."""

    account_id: UUID
    tenant_id: UUID
    account_code: str
    host: str
    port: int
    client_id: int
    heartbeat_seconds: float = 5.0
    heartbeat_timeout: float = 5.0
    request_timeout: float = 15.0
    connect_timeout: float = 10.0
    reconcile_seconds: float = 300.0
    poll_seconds: float = 1.0
    pacing_rate: float = 40.0
    pacing_burst: float = 5.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    breaker_threshold: int = 5
    breaker_open_seconds: float = 60.0
    commission_grace: float = 1.0
    events_maxlen: int = 100_000
    market_data: tuple[tuple[str, int], ...] = ()  # (symbol, con_id)

    @property
    def login(self) -> str:
        return f"{self.host}:{self.port}"


def _in_db_thread(function: Callable[..., T], kwargs: dict[str, Any]) -> T:
    close_old_connections()
    return function(**kwargs)


class Context:
    """Shared state of one gateway run."""

    def __init__(self, config: GatewayConfig, redis_client: redis.Redis) -> None:
        self.config = config
        self.redis = redis_client
        self.ib: Any = None
        self.pacer = Pacer(TokenBucket(rate=config.pacing_rate, capacity=config.pacing_burst))
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ib-db")
        self._publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ib-publish")
        self.reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ib-commands")
        self.next_valid_id = 0
        self.backend_up = True
        self.published = 0

    async def db(self, function: Callable[..., T], /, **kwargs: Any) -> T:
        """Run a store function in the database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db, partial(_in_db_thread, function, kwargs))

    async def publish(self, event: wire.WireEvent) -> None:
        """Put one broker event on `ib:events`; retried until Redis takes it (never dropped)."""
        fields = wire.encode(event)
        loop = asyncio.get_running_loop()
        delay = 0.1
        while True:
            try:
                await loop.run_in_executor(
                    self._publisher,
                    partial(self.redis.xadd, BROKER_EVENTS, fields, maxlen=self.config.events_maxlen, approximate=True),
                )
            except redis.RedisError as exc:
                log.warning("ib.publish_failed: %s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.published += 1
            return

    def event(self, kind: str, *, order_id: str, tenant_id: str, **values: Any) -> wire.WireEvent:
        return wire.WireEvent(
            kind=kind, tenant_id=tenant_id, account_id=str(self.config.account_id), order_id=order_id, **values
        )

    def close(self) -> None:
        def close_connections() -> None:
            connections.close_all()

        self._db.submit(close_connections).result(timeout=10)
        for pool in (self._db, self._publisher, self.reader):
            pool.shutdown(wait=True, cancel_futures=True)


def to_decimal(value: Any) -> Decimal:
    """A float from ib_async as the decimal it stands for (via repr: 190.01 stays 190.01)."""
    if isinstance(value, Decimal):
        return value
    return Decimal(repr(float(value))) if value not in (None, "") else Decimal(0)
