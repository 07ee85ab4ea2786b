"""One Redis client per process, with timeouts, from `settings.REDIS_URL`."""

from __future__ import annotations

from functools import cache

import redis
from django.conf import settings


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        health_check_interval=30,
        retry_on_timeout=False,
    )


def get_redis() -> redis.Redis:
    """Return this process's client for the configured URL (tests switch the URL per run)."""
    return _client(settings.REDIS_URL)
