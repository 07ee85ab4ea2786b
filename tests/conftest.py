"""Test harness: the machine's real PostgreSQL and Redis, each run in a database and Redis db
of its own (pytest-django names the database test_oms_<pid>; Redis dbs 1-15 are leased)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
import pytest
import redis
from django.conf import settings
from django.contrib.auth.hashers import get_hashers, get_hashers_by_algorithm
from django.test import Client

from apps.tenants.models import Membership, Tenant, User
from apps.tenants.scopes import Role
from apps.tenants.services.auth import session_open

BASE_REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0]
_lease: tuple[redis.Redis, str, str] | None = None


def _lease_redis_db() -> int:
    """Lease a Redis db number for this run (the lease lives in db 0 and expires on its own)."""
    global _lease
    control = redis.Redis.from_url(f"{BASE_REDIS}/0", socket_connect_timeout=3)
    run_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        for number in range(1, 16):
            key = f"oms:test-redis-lease:{number}"
            if control.set(key, run_id, nx=True, ex=3600):
                _lease = (control, key, run_id)
                return number
    except redis.RedisError as exc:
        pytest.exit(f"Redis is not reachable at {BASE_REDIS}: {exc}; start it (see README)", returncode=2)
    pytest.exit("every Redis db 1-15 is leased by another test run; wait or clear oms:test-redis-lease:*", 2)


def pytest_configure(config: pytest.Config) -> None:
    try:
        psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=3).close()
    except psycopg.Error as exc:
        if "DATABASE_URL" not in os.environ:
            pytest.exit(f"PostgreSQL is not reachable at 127.0.0.1:5432: {exc}; start it (see README)", 2)
    # Fast hashing in tests; production keeps PBKDF2 (still accepted here for fixtures made with it).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]
    get_hashers.cache_clear()
    get_hashers_by_algorithm.cache_clear()
    number = _lease_redis_db()
    url = f"{BASE_REDIS}/{number}"
    os.environ["OMS_TEST_REDIS_URL"] = url
    settings.REDIS_URL = url
    settings.CELERY_BROKER_URL = settings.CELERY_RESULT_BACKEND = url
    settings.CACHES["default"]["LOCATION"] = url
    from oms.celery import app as celery_app

    celery_app.conf.broker_url = celery_app.conf.result_backend = url
    redis.Redis.from_url(url).flushdb()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _lease is not None:
        control, key, run_id = _lease
        if control.get(key) == run_id.encode():
            control.delete(key)


@pytest.fixture(autouse=True)
def _clean_redis() -> Iterator[None]:
    """Every test starts with an empty Redis db (rate-limit buckets, caches, streams)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield
    client.close()


@pytest.fixture
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


class Api:
    """A JSON client for /api/v1 with optional credentials."""

    def __init__(self, headers: dict[str, str] | None = None, remote_addr: str = "127.0.0.1") -> None:
        self.client = Client(REMOTE_ADDR=remote_addr)
        self.headers = headers or {}

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, **extra: Any):

        url = path
        if not url.startswith(("/api/", "/metrics", "/admin")):
            url = "/api/v1" + path
        all_headers = {**self.headers, **(headers or {})}
        data = orjson.dumps(body) if body is not None else None
        response = self.client.generic(
            method,
            url,
            data=data or b"",
            content_type="application/json",
            headers=all_headers,
            **extra,
        )
        response.json_body = (
            orjson.loads(response.content)
            if response.get("Content-Type", "").startswith("application/json") and response.content
            else None
        )
        return response

    def get(self, path: str, **kw: Any):
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any):
        return self.request("POST", path, body if body is not None else {}, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any):
        return self.request("PATCH", path, body if body is not None else {}, **kw)

    def delete(self, path: str, **kw: Any):
        return self.request("DELETE", path, **kw)


@dataclass
class Member:
    tenant: Tenant
    user: User
    role: Role
    api: Api
    access: str
    refresh: str


def make_tenant(slug: str | None = None) -> Tenant:
    slug = slug or f"t-{uuid.uuid4().hex[:10]}"
    return Tenant.objects.create(slug=slug, name=slug.title())


def make_member(tenant: Tenant, role: Role = Role.ADMIN, email: str | None = None, password: str = "correct-horse-9"):
    email = email or f"{role.lower()}-{uuid.uuid4().hex[:8]}@example.com"
    user = User.objects.create_user(email, password)
    Membership.objects.create(tenant=tenant, user=user, role=role)
    pair = session_open(user=user, tenant=tenant)
    return Member(tenant, user, role, Api({"Authorization": f"Bearer {pair.access}"}), pair.access, pair.refresh)


@pytest.fixture
def tenant(db: Any) -> Tenant:
    return make_tenant()


@pytest.fixture
def other_tenant(db: Any) -> Tenant:
    return make_tenant()


@pytest.fixture
def admin(tenant: Tenant) -> Member:
    return make_member(tenant, Role.ADMIN)


@pytest.fixture
def manager(tenant: Tenant) -> Member:
    return make_member(tenant, Role.MANAGER)


@pytest.fixture
def trader(tenant: Tenant) -> Member:
    return make_member(tenant, Role.TRADER)


@pytest.fixture
def viewer(tenant: Tenant) -> Member:
    return make_member(tenant, Role.VIEWER)


@pytest.fixture
def anonymous() -> Api:
    return Api()
