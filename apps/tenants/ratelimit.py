"""Token-bucket rate limiting in Redis, per tenant and per principal, by route class.

One Lua script takes a token from every bucket of a request atomically (all or none), so a
refused request never drains the tenant's bucket. Redis being unreachable lets requests through
(logged and counted): the API stays usable for reads and cancels when only the limiter is down.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import redis
import structlog
from django.conf import settings
from prometheus_client import Counter

from apps.common.redis import get_redis

log = structlog.get_logger(__name__)
LIMITER_ERRORS = Counter("oms_ratelimit_errors_total", "Rate-limit checks skipped because Redis failed")

# KEYS: the bucket keys, then optionally the tenant's auth-epoch key. ARGV: now, the number of
# buckets, then (capacity, rate) per bucket. Returns {allowed, retry_after_ms, remaining_min, epoch}.
# The epoch rides along so that the authentication cache costs no extra round trip.
_SCRIPT = """
local now = tonumber(ARGV[1])
local buckets = tonumber(ARGV[2])
local states = {}
local allowed = 1
local retry_ms = 0
local remaining = -1
for i = 1, buckets do
  local key = KEYS[i]
  local capacity = tonumber(ARGV[1 + 2 * i])
  local rate = tonumber(ARGV[2 + 2 * i])
  local data = redis.call('HMGET', key, 't', 'ts')
  local tokens = tonumber(data[1]) or capacity
  local ts = tonumber(data[2]) or now
  tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate / 1000)
  if tokens < 1 then
    allowed = 0
    retry_ms = math.max(retry_ms, math.ceil((1 - tokens) * 1000 / rate))
  end
  states[i] = tokens
  if remaining < 0 or tokens < remaining then remaining = tokens end
end
for i = 1, buckets do
  local tokens = states[i]
  if allowed == 1 then tokens = tokens - 1 end
  local capacity = tonumber(ARGV[1 + 2 * i])
  local rate = tonumber(ARGV[2 + 2 * i])
  redis.call('HSET', KEYS[i], 't', tokens, 'ts', now)
  redis.call('PEXPIRE', KEYS[i], math.ceil(capacity * 1000 / rate) + 1000)
end
if allowed == 1 then remaining = remaining - 1 end
local epoch = false
if #KEYS > buckets then epoch = redis.call('GET', KEYS[buckets + 1]) or '0' end
return {allowed, retry_ms, math.floor(math.max(0, remaining)), epoch}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # seconds, rounded up
    auth_epoch: str | None = None  # the tenant's authentication epoch, when asked for


def _bucket(route_class: str) -> tuple[float, float]:
    capacity, rate = settings.RATE_LIMITS[route_class].split("/")
    return float(capacity), float(rate)


_script_cache: dict[int, object] = {}


def auth_epoch_key(tenant_id: str) -> str:
    return f"oms:auth-epoch:{tenant_id}"


def check(*, route_class: str, principal: str, tenant_id: str | None, with_epoch: bool = False) -> Decision | None:
    """Take one token for `principal` (and its tenant); None when limiting is off or Redis failed.

    With `with_epoch`, the tenant's authentication epoch comes back in the same round trip.
    """
    if not settings.RATE_LIMIT_ENABLED:
        return None
    client = get_redis()
    script = _script_cache.get(id(client))
    if script is None:
        script = _script_cache[id(client)] = client.register_script(_SCRIPT)
    capacity, rate = _bucket(route_class)
    keys = [f"oms:rl:{route_class}:{principal}"]
    args: list[float] = [capacity, rate]
    if tenant_id:
        tenant_capacity, tenant_rate = _bucket("tenant")
        keys.append(f"oms:rl:tenant:{tenant_id}")
        args += [tenant_capacity, tenant_rate]
    buckets = len(keys)
    if with_epoch and tenant_id:
        keys.append(auth_epoch_key(tenant_id))
    try:
        allowed, retry_ms, remaining, epoch = script(  # type: ignore[operator]
            keys=keys, args=[time.time() * 1000, buckets, *args]
        )
    except redis.RedisError as exc:
        LIMITER_ERRORS.inc()
        log.warning("ratelimit.redis_unavailable", error=str(exc))
        return None
    return Decision(
        allowed=bool(allowed),
        limit=int(capacity),
        remaining=int(remaining),
        retry_after=math.ceil(retry_ms / 1000),
        auth_epoch=epoch.decode() if isinstance(epoch, bytes) else None,
    )
