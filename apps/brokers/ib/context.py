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
    market_data_lines: int | None = None  # None: settings.MARKETDATA_LINES_PER_LOGIN

    @property
    def login(self) -> str:
        return f"{self.host}:{self.port}"


def _in_db_thread(function: Callable[..., T], kwargs: dict[str, Any]) -> T:
    close_old_connections()
    return function(**kwargs)


class Context:
    """Shared state of one gateway run.

    A login serving several broker accounts has one root context (the first account's) and a
    `view` per other account: its own settings and command reader, the root's connection, pacer,
    connectivity, database thread and publisher (so the login's messages share one bucket).
    """

    def __init__(self, config: GatewayConfig, redis_client: redis.Redis, *, root: Context | None = None) -> None:
        self.config = config
        self.redis = redis_client
        self.root = root
        self._ib: Any = None
        self._backend_up = True
        self._next_valid_id = 0
        if root is None:
            self.pacer = Pacer(TokenBucket(rate=config.pacing_rate, capacity=config.pacing_burst))
            self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ib-db")
            self._publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ib-publish")
        else:
            self.pacer, self._db, self._publisher = root.pacer, root._db, root._publisher
        self.reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ib-commands")
        self.published = 0

    def view(self, config: GatewayConfig) -> Context:
        """The context of another account served over this context's login."""
        return Context(config, self.redis, root=self)

    @property
    def ib(self) -> Any:
        return self.root.ib if self.root is not None else self._ib

    @ib.setter
    def ib(self, value: Any) -> None:
        if self.root is not None:
            self.root.ib = value
        else:
            self._ib = value

    @property
    def backend_up(self) -> bool:
        return self.root.backend_up if self.root is not None else self._backend_up

    @backend_up.setter
    def backend_up(self, value: bool) -> None:
        if self.root is not None:
            self.root.backend_up = value
        else:
            self._backend_up = value

    @property
    def next_valid_id(self) -> int:
        return self.root.next_valid_id if self.root is not None else self._next_valid_id

    @next_valid_id.setter
    def next_valid_id(self, value: int) -> None:
        if self.root is not None:
            self.root.next_valid_id = value
        else:
            self._next_valid_id = value

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

    async def publish_many(self, events: list[wire.WireEvent], *, chunk: int = 500) -> None:
        """Put many broker events on `ib:events` in order, pipelined; retried like `publish`."""
        loop = asyncio.get_running_loop()
        for start in range(0, len(events), chunk):
            batch = [wire.encode(event) for event in events[start : start + chunk]]

            def send(batch: list[dict[str, str]] = batch) -> None:
                pipe = self.redis.pipeline(transaction=False)
                for fields in batch:
                    pipe.xadd(BROKER_EVENTS, fields, maxlen=self.config.events_maxlen, approximate=True)
                pipe.execute()

            delay = 0.1
            while True:
                try:
                    await loop.run_in_executor(self._publisher, send)
                except redis.RedisError as exc:
                    # A retried batch may repeat entries already added: the applier dedups by exec id.
                    log.warning("ib.publish_failed: %s; retrying in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                self.published += len(batch)
                break

    def event(self, kind: str, *, order_id: str, tenant_id: str, **values: Any) -> wire.WireEvent:
        return wire.WireEvent(
            kind=kind, tenant_id=tenant_id, account_id=str(self.config.account_id), order_id=order_id, **values
        )

    def close(self) -> None:
        if self.root is not None:  # a view: the root owns the shared threads
            self.reader.shutdown(wait=True, cancel_futures=True)
            return

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
