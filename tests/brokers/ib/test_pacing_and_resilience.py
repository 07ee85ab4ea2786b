"""The token bucket, the pacer's priorities, backoff with jitter and the circuit breaker."""

from __future__ import annotations

import asyncio
import random

from apps.brokers.ib.pacing import Pacer, Priority, TokenBucket
from apps.brokers.ib.resilience import Backoff, BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bucket_never_lets_more_than_rate_plus_capacity_through_in_a_second() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=40, capacity=5, clock=clock)
    sent = []
    while clock.now < 3.0:
        if bucket.try_take() == 0:
            sent.append(clock.now)
        clock.now = round(clock.now + 0.001, 6)
    worst = max(sum(1 for t in sent if start <= t < start + 1.0) for start in sent)
    assert worst <= 45
    assert len(sent) >= 120  # and it is not needlessly slow


def test_empty_bucket_says_how_long_to_wait() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, capacity=1, clock=clock)
    assert bucket.try_take() == 0
    assert bucket.try_take() == 0.1


def test_pacer_runs_cancels_first_and_drops_nothing() -> None:
    async def scenario() -> list[str]:
        pacer = Pacer(TokenBucket(rate=1000, capacity=1))
        order: list[str] = []
        futures = [pacer.submit(lambda i=i: order.append(f"order{i}"), Priority.ORDER) for i in range(3)]
        futures.append(pacer.submit(lambda: order.append("cancel"), Priority.CANCEL))
        pacer.start()
        await asyncio.gather(*futures)
        await pacer.stop()
        return order

    assert asyncio.run(scenario()) == ["cancel", "order0", "order1", "order2"]


def test_backoff_grows_exponentially_with_full_jitter_and_a_cap() -> None:
    backoff = Backoff(base=1, cap=8, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(6)]
    ceilings = [1, 2, 4, 8, 8, 8]
    assert all(0 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == 6
    backoff.reset()
    assert backoff.next_delay() <= 1


def test_breaker_opens_probes_half_open_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, open_seconds=10, clock=clock)
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == BreakerState.OPEN
    assert not breaker.allow()
    clock.now = 10
    assert breaker.state == BreakerState.HALF_OPEN
    breaker.record_failure()  # the probe failed: open again, twice as long
    assert breaker.state == BreakerState.OPEN
    assert breaker.seconds_until_probe() == 20
    clock.now = 30
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == BreakerState.CLOSED
    assert breaker.failures == 0
