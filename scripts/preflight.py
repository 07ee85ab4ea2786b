"""Check that PostgreSQL and Redis answer before anything else runs; create the database if missing.

Says which service failed, at which URL, and how to start it, then exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import urlsplit

import psycopg
import redis
from psycopg import sql

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/oms"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
PG_HINT = "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_HINT = "start it with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def check_postgres(url: str, *, create: bool) -> str | None:
    parts = urlsplit(url)
    database = parts.path.lstrip("/") or "postgres"
    server_url = parts._replace(path="/postgres").geturl()
    try:
        with psycopg.connect(server_url, connect_timeout=3, autocommit=True) as connection:
            exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
            if not exists and create:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
                print(f"preflight: created database {database!r}")
    except psycopg.Error as exc:
        return f"PostgreSQL is not reachable at {_redacted(url)}: {str(exc).strip()}\n  {PG_HINT}"
    return None


def check_redis(url: str) -> str | None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except redis.RedisError as exc:
        return f"Redis is not reachable at {_redacted(url)}: {exc}\n  {REDIS_HINT}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-create", action="store_true", help="only check; do not create the database")
    args = parser.parse_args()
    problems = [
        problem
        for problem in (
            check_postgres(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL), create=not args.no_create),
            check_redis(os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)),
        )
        if problem
    ]
    for problem in problems:
        print(f"preflight: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
