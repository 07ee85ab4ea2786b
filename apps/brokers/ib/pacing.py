"""Pacing: every message to IB takes a token from one bucket, kept under IB's 50 messages/second.

IB counts every message a client sends (orders, cancels, requests alike) and answers error 100,
then drops the socket, above 50 per second. A token bucket of `rate` tokens per second holding at
most `capacity` lets through at most `rate + capacity` messages in any one-second window, so the
defaults (40/s, burst 5) stay clear of the limit with room for the few messages ib_async sends by
itself (the startup synchronisation). ib_async's own throttle is switched off: it cannot tell a
cancel from a market data request, and it queues without priority.

`Pacer` queues the work: cancels (and the global cancel of a kill switch) jump ahead of orders and
requests; when the bucket is empty, work waits, and nothing is ever dropped. Pure: asyncio only.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class TokenBucket:
    """`rate` tokens per second, at most `capacity` in store; `clock` is monotonic seconds."""

    def __init__(self, *, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be positive and capacity at least 1")
        self.rate, self.capacity, self.clock = rate, capacity, clock
        self.tokens = capacity
        self.updated = clock()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def try_take(self) -> float:
        """Take a token and return 0, or return how many seconds to wait before one is there."""
        now = self.clock()
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Priority(IntEnum):
    """Lower goes first."""

    CANCEL = 0
    ORDER = 1
    REQUEST = 2


@dataclass(order=True)
class _Job:
    priority: int
    seq: int
    run: Callable[[], Any] = field(compare=False)
    done: asyncio.Future[Any] = field(compare=False)


class Pacer:
    """Runs sends one at a time, each after taking a token, cancels first, in arrival order otherwise."""

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket
        self._queue: asyncio.PriorityQueue[_Job] = asyncio.PriorityQueue()
        self._seq = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ib-pacer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def clear(self) -> int:
        """Drop every queued job (its future is cancelled); return how many. Used when a session
        ends: what was not sent yet is resolved by the next reconciliation, not sent blindly."""
        dropped = 0
        while not self._queue.empty():
            job = self._queue.get_nowait()
            job.done.cancel()
            dropped += 1
        return dropped

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def submit(self, run: Callable[[], Any], priority: Priority = Priority.ORDER) -> asyncio.Future[Any]:
        """Queue `run` (a synchronous send); the future gets its result once it has run."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(int(priority), next(self._seq), run, done))
        return done

    async def send(self, run: Callable[[], Any], priority: Priority = Priority.ORDER) -> Any:
        return await self.submit(run, priority)

    async def request(self, start: Callable[[], Awaitable[Any]], *, timeout: float) -> Any:
        """Pace a request that ib_async answers with an awaitable (reqOpenOrders and the like)."""
        awaitable = await self.submit(start, Priority.REQUEST)
        return await asyncio.wait_for(awaitable, timeout)

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            while (wait := self.bucket.try_take()) > 0:
                await asyncio.sleep(wait)
            if job.done.cancelled():
                continue
            try:
                result = job.run()
            except Exception as exc:  # the caller decides; the pacer keeps going
                job.done.set_exception(exc)
            else:
                self.sent += 1
                job.done.set_result(result)
