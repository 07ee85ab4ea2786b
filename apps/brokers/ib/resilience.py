"""Reconnect policy: exponential backoff with jitter, and a circuit breaker with half-open probes.

Pure: the clock and the random source are parameters, so tests drive them. Backoff uses "full
jitter" (a uniform draw between zero and the capped exponential), which spreads the reconnects of
many gateways after an IB restart instead of having them hit the gateway in lock step.

The breaker opens after `threshold` consecutive failed connects: while open, no attempt is made
for `open_seconds` (the account shows DISCONNECTED with the time of the next probe). Then it is
half-open: one probe connect is allowed; success closes it, failure opens it again for longer.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


@dataclass
class Backoff:
    """Delays of successive retries: uniform in [0, min(cap, base * 2**attempt)]."""

    base: float = 0.5
    cap: float = 30.0
    rng: random.Random | None = None
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2**self.attempt))
        self.attempt += 1
        return (self.rng or random).uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class BreakerState(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class CircuitBreaker:
    """Closed → (threshold failures) → open → (open_seconds) → half-open → probe → closed / open."""

    def __init__(
        self,
        *,
        threshold: int = 5,
        open_seconds: float = 60.0,
        max_open_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold, self.open_seconds, self.max_open_seconds = threshold, open_seconds, max_open_seconds
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.current_open_seconds = open_seconds

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self.opened_at >= self.current_open_seconds:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """Whether a connect attempt may be made now (closed, or half-open for one probe)."""
        return self.state != BreakerState.OPEN

    def seconds_until_probe(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.current_open_seconds - self.clock())

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.current_open_seconds = self.open_seconds

    def record_failure(self) -> None:
        was_half_open = self.state == BreakerState.HALF_OPEN
        self.failures += 1
        if was_half_open:
            # The probe failed: open again, for twice as long (capped).
            self.current_open_seconds = min(self.max_open_seconds, self.current_open_seconds * 2)
            self.opened_at = self.clock()
        elif self.failures >= self.threshold and self.opened_at is None:
            self.opened_at = self.clock()
