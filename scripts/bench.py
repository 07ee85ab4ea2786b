"""`make bench`: every bench/*.py against a database and a Redis db of their own.

Never the development ones (`make run`'s database and Redis db 0): the benchmarks create tenants,
accounts whose gateways stop when they finish (the readiness check would then report them
stale), prices and stream entries that would show up there. The bench database (`<name>_bench`)
is kept between runs, so only new migrations are applied; the Redis db is leased the way the
test suite leases one (so a concurrent `make test` never shares it) and emptied before and after.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from preflight import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, check_postgres, check_redis  # noqa: E402

LEASE_KEY = "oms:test-redis-lease:{}"  # shared with tests/conftest.py: one owner per db number
LEASE_SECONDS = 3600


def bench_database_url(url: str) -> str:
    parts = urlsplit(url)
    name = parts.path.lstrip("/") or "oms"
    return parts._replace(path=f"/{name}_bench").geturl()


def lease_redis_db(control: redis.Redis, owner: str) -> int | None:
    for number in range(1, 16):
        if control.set(LEASE_KEY.format(number), owner, nx=True, ex=LEASE_SECONDS):
            return number
    return None


def main() -> int:
    database_url = bench_database_url(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    redis_base = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL).rsplit("/", 1)[0]
    problem = check_postgres(database_url, create=True) or check_redis(f"{redis_base}/0")
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 1
    control = redis.Redis.from_url(f"{redis_base}/0", socket_connect_timeout=3)
    owner = f"bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    number = lease_redis_db(control, owner)
    if number is None:
        print("bench: every Redis db 1-15 is leased by a test run; wait for it to finish", file=sys.stderr)
        return 1
    redis_url = f"{redis_base}/{number}"
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url}
    print(f"bench: database {urlsplit(database_url).path.lstrip('/')}, Redis db {number}", flush=True)
    try:
        redis.Redis.from_url(redis_url).flushdb()
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
        for script in sorted((ROOT / "bench").glob("[!_]*.py")):  # _shared.py is a module, not a bench
            print(f"== bench/{script.name}", flush=True)
            run = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, check=False)  # noqa: S603 (bench/)
            if run.returncode:
                print(f"bench: bench/{script.name} failed", file=sys.stderr)
                return 1
        return 0
    finally:
        redis.Redis.from_url(redis_url).flushdb()
        if control.get(LEASE_KEY.format(number)) == owner.encode():
            control.delete(LEASE_KEY.format(number))


if __name__ == "__main__":
    sys.exit(main())
