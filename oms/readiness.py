"""Readiness checks: each returns `{"ok": bool, ...}` and names what failed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor

from apps.common.redis import get_redis

Check = Callable[[], dict[str, Any]]


def check_database() -> dict[str, Any]:
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return {"ok": False, "error": f"database unreachable: {exc.__class__.__name__}"}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def check_migrations() -> dict[str, Any]:
    try:
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        return {"ok": False, "error": f"cannot read migrations: {exc.__class__.__name__}"}
    if pending:
        return {
            "ok": False,
            "error": f"{len(pending)} migration(s) not applied",
            "pending": [str(m[0]) for m in pending],
        }
    return {"ok": True}


def check_redis() -> dict[str, Any]:
    started = time.perf_counter()
    try:
        get_redis().ping()
    except redis.RedisError as exc:
        return {"ok": False, "error": f"redis unreachable: {exc.__class__.__name__}"}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


# Apps that add dependencies (the broker gateways) register their checks here.
CHECKS: dict[str, Check] = {
    "database": check_database,
    "migrations": check_migrations,
    "redis": check_redis,
}


def register(name: str, check: Check) -> None:
    CHECKS[name] = check


def run_checks() -> dict[str, dict[str, Any]]:
    results = {}
    for name, check in CHECKS.items():
        try:
            results[name] = check()
        except Exception as exc:  # a broken check must report, not crash the probe
            results[name] = {"ok": False, "error": f"check failed: {exc.__class__.__name__}"}
    return results
