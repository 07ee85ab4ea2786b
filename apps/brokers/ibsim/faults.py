"""The switches tests flip to make the simulator misbehave the way IB does.

Each switch reproduces something real: IB sends order status duplicates, commission reports can
arrive before their execution, a fill can land after a cancel request, TWS enforces 50 messages
per second per connection, and the link between the gateway and IB's servers drops (1100) while
the API socket stays open. The switches live in one mutable object owned by the simulator's
event loop; `IBSimulator` flips them from other threads through the loop.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass
class Rejection:
    """An error to answer the next new order with, instead of accepting it."""

    code: int
    reason: str


@dataclass
class Faults:
    """Fault switches; all off by default except the message-rate limit, which IB always enforces."""

    rate_limit: bool = True
    max_messages_per_second: int = 50
    ack_delay: float = 0.0
    duplicate_status: bool = False
    commission_first: bool = False
    commission_delay: float = 0.0  # seconds (real time) between an execution and its commission report
    late_fill_on_cancel: bool = False
    late_fill_quantity: Decimal | None = None
    auto_match: bool = True
    backend_down: bool = False
    data_lost: bool = False
    refuse_until: float = 0.0
    rejections: deque[Rejection] = field(default_factory=deque)

    def refusing(self) -> bool:
        return time.monotonic() < self.refuse_until


class RateLimiter:
    """TWS's per-connection limit on incoming messages, over a sliding one-second window.

    IB answers error 100 when a client goes over the limit and drops the connection if it keeps
    going. Here: messages over the limit are not processed, the first one in a window gets error
    100, and once the client has sent twice the limit within one second the connection is closed.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._times: deque[float] = deque()
        self._warned_at = -1.0
        self.peak = 0  # the most messages seen in any one-second window

    @property
    def count(self) -> int:
        """Messages in the current one-second window."""
        return len(self._times)

    def admit(self, now: float | None = None) -> tuple[bool, bool, bool]:
        """Count one message; return (process it, send error 100, disconnect)."""
        now = time.monotonic() if now is None else now
        times = self._times
        while times and now - times[0] >= 1.0:
            times.popleft()
        times.append(now)
        count = len(times)
        self.peak = max(self.peak, count)
        if count <= self.limit:
            return True, False, False
        warn = now - self._warned_at >= 1.0
        if warn:
            self._warned_at = now
        return False, warn, count > 2 * self.limit
