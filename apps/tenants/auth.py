"""Ninja authentication: JWT bearer tokens and API keys, each bound to one tenant.

`scoped("orders:place")` is what a route declares. Missing credentials are 401; bad, expired or
revoked credentials are 401 with the reason; a principal without the scope, or calling from an
address outside the tenant's allowlist, is 403; a principal over its rate is 429.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from ninja.security import APIKeyHeader, HttpBearer
from ninja.throttling import BaseThrottle
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.state import token_backend
from rest_framework_simplejwt.tokens import AccessToken

from apps.common.context import Actor, ActorKind
from apps.common.errors import AuthenticationFailed, PermissionDenied, RateLimited
from apps.tenants import ratelimit
from apps.tenants.models import ApiKey, Tenant
from apps.tenants.principal import Principal
from apps.tenants.scopes import Role, scopes_for
from apps.tenants.selectors import (
    api_key_identity_forget,
    api_key_identity_get,
    api_key_session_get,
    session_member_get,
)

API_KEY_PREFIX = "oms_"
LAST_USED_GRANULARITY = timedelta(minutes=1)


def client_ip(request: HttpRequest) -> str | None:
    """The caller's address: REMOTE_ADDR, or X-Forwarded-For when the peer is a trusted proxy."""
    remote = request.META.get("REMOTE_ADDR") or None
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if forwarded and remote and _in_networks(remote, settings.TRUSTED_PROXIES):
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        # The rightmost hop not added by our own proxies is the client.
        for hop in reversed(hops):
            if not _in_networks(hop, settings.TRUSTED_PROXIES):
                return hop
    return remote


def _in_networks(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)


def ip_allowed(tenant: Tenant, address: str | None) -> bool:
    if not tenant.ip_allowlist:
        return True
    return address is not None and _in_networks(address, tenant.ip_allowlist)


def request_actor(request: HttpRequest, *, kind: ActorKind, label: str, **ids: Any) -> Actor:
    return Actor(
        kind=kind,
        label=label,
        ip=client_ip(request),
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:512],
        **ids,
    )


def route_class(request: HttpRequest) -> str:
    return "read" if request.method in {"GET", "HEAD", "OPTIONS"} else "write"


def enforce_rate_limit(
    request: HttpRequest, *, route: str, principal: str, tenant_id: str | None, with_epoch: bool = False
) -> ratelimit.Decision | None:
    decision = ratelimit.check(route_class=route, principal=principal, tenant_id=tenant_id, with_epoch=with_epoch)
    if decision is None:
        return None
    request.rate_limit = decision  # type: ignore[attr-defined]  # the middleware adds X-RateLimit-*
    if not decision.allowed:
        raise RateLimited(
            f"Rate limit exceeded for {route} requests; retry in {decision.retry_after} s",
            retry_after=decision.retry_after,
            details={"route_class": route, "limit": decision.limit},
        )
    return decision


Scope = str | tuple[str, ...] | None  # a tuple: any one of these scopes


def _authorise(request: HttpRequest, principal: Principal, scope: Scope, *, rate_limited: bool = False) -> Principal:
    address = client_ip(request)
    if not ip_allowed(principal.tenant, address):
        raise PermissionDenied(f"Address {address} is not in the tenant's IP allowlist")
    if not rate_limited:
        enforce_rate_limit(
            request, route=route_class(request), principal=principal.rate_key, tenant_id=str(principal.tenant.id)
        )
    needed = (scope,) if isinstance(scope, str) else scope
    if needed and not principal.scopes.intersection(needed):
        raise PermissionDenied(
            f"This operation needs the scope {' or '.join(repr(name) for name in needed)}",
            details={"required_scope": list(needed)},
            hint="Ask a tenant admin for a role or API key that grants it",
        )
    return principal


# Access tokens this process has verified, by their exact text. A token's claims cannot change
# (the signature covers them), so the only check that depends on when the token comes back is its
# expiry, which `access_claims` repeats on every request; revocation is the member lookup's job.
# Decoding and verifying a JWT was the largest CPU cost of an authenticated request.
_verified_access: dict[str, tuple[dict[str, Any], float]] = {}
VERIFIED_ACCESS_MAX = 20_000


def access_claims(token: str) -> dict[str, Any]:
    """The verified claims of an access token (signature, expiry, type), or AuthenticationFailed."""
    entry = _verified_access.get(token)
    if entry is not None:
        claims, valid_until = entry
        if time.time() < valid_until:
            return claims
        _verified_access.pop(token, None)  # expired: simplejwt says so below
    try:
        claims = AccessToken(token).payload
    except TokenError as exc:
        raise AuthenticationFailed(f"Access token rejected: {exc}") from exc
    if len(_verified_access) >= VERIFIED_ACCESS_MAX:
        _verified_access.clear()  # crude but bounded: a dropped token costs one more verification
    # simplejwt refuses a token once `exp <= now - leeway`.
    _verified_access[token] = (claims, claims["exp"] + token_backend.get_leeway().total_seconds())
    return claims


class JWTAuth(HttpBearer):
    """`Authorization: Bearer <access token>`."""

    def __init__(self, scope: Scope) -> None:
        super().__init__()
        self.scope = scope

    def __call__(self, request: HttpRequest) -> Principal | None:
        # As HttpBearer.__call__, reading the one header from request.META: `request.headers`
        # parses every header of the request, a cost paid on every API call.
        value = request.META.get("HTTP_AUTHORIZATION")
        if not value:
            return None
        scheme, _, token = value.partition(" ")
        if scheme.lower() != self.openapi_scheme:
            return None
        return self.authenticate(request, token)

    def authenticate(self, request: HttpRequest, token: str) -> Principal:
        claims = access_claims(token)
        try:
            user_id, tenant_id = UUID(claims["user_id"]), UUID(claims["tenant_id"])
            family_id = UUID(claims["fam"]) if claims.get("fam") else None
        except (KeyError, ValueError, TypeError) as exc:
            raise AuthenticationFailed("Access token is missing its user, tenant or session") from exc
        # Rate limiting first: its Redis round trip also brings the tenant's authentication epoch,
        # which lets the member lookup below come from this process's cache.
        decision = enforce_rate_limit(
            request, route=route_class(request), principal=f"user:{user_id}", tenant_id=str(tenant_id), with_epoch=True
        )
        member = session_member_get(
            user_id=user_id,
            tenant_id=tenant_id,
            family_id=family_id,
            epoch=decision.auth_epoch if decision is not None else None,
        )
        if member is None:
            raise AuthenticationFailed("Access token no longer grants access to this tenant")
        if member.session_revoked:
            raise AuthenticationFailed("Access token was revoked (signed out)")
        user, tenant = member.user, member.tenant
        if not user.is_active or tenant.status != Tenant.Status.ACTIVE:
            raise AuthenticationFailed("The user or the tenant is deactivated")
        enrolment_only = bool(claims.get("mfa_enrolment_only"))
        principal = Principal(
            tenant=tenant,
            user=user,
            role=Role(member.role),
            scopes=frozenset() if enrolment_only else scopes_for(member.role),
            actor=request_actor(request, kind=ActorKind.USER, label=user.email, user_id=user.id),
            token_family_id=claims.get("fam"),
            mfa_enrolment_only=enrolment_only,
        )
        return _authorise(request, principal, self.scope, rate_limited=True)


def hash_secret(secret: str) -> str:
    # API key secrets are 32 random bytes: a fast hash is enough, nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def split_api_key(raw: str) -> tuple[str, str] | None:
    if not raw.startswith(API_KEY_PREFIX):
        return None
    prefix, _, secret = raw[len(API_KEY_PREFIX) :].partition("_")
    if not prefix or not secret:
        return None
    return prefix, secret


class ApiKeyAuth(APIKeyHeader):
    """`X-API-Key: oms_<prefix>_<secret>`."""

    param_name = "X-API-Key"

    def __init__(self, scope: Scope) -> None:
        super().__init__()
        self.scope = scope

    def _get_key(self, request: HttpRequest) -> str | None:
        return request.META.get("HTTP_X_API_KEY")  # not request.headers, as in JWTAuth.__call__

    def authenticate(self, request: HttpRequest, key: str | None) -> Principal | None:
        if not key:
            return None
        parts = split_api_key(key)
        if parts is None:
            raise AuthenticationFailed("Malformed API key")
        prefix, secret = parts
        identity, session = api_key_identity_get(prefix=prefix)
        # Compare even when the prefix is unknown so timing does not tell which prefixes exist.
        expected = identity.secret_hash if identity else "0" * 64
        if not hmac.compare_digest(expected, hash_secret(secret)) or identity is None:
            raise AuthenticationFailed("Unknown API key")
        # As for tokens: the rate limit's round trip brings the tenant's authentication epoch, under
        # which the key's state may come from this process's cache.
        decision = enforce_rate_limit(
            request,
            route=route_class(request),
            principal=f"key:{identity.api_key_id}",
            tenant_id=str(identity.tenant_id),
            with_epoch=True,
        )
        if session is None:  # else just read on first sight of the prefix
            epoch = decision.auth_epoch if decision is not None else None
            session = api_key_session_get(api_key_id=identity.api_key_id, epoch=epoch)
            if session is None:  # deleted since this process first saw it
                api_key_identity_forget(prefix=prefix)
                raise AuthenticationFailed("Unknown API key")
        api_key, creator_role = session.api_key, session.creator_role
        now = timezone.now()
        if api_key.revoked_at is not None:
            raise AuthenticationFailed("API key was revoked")
        if api_key.expires_at is not None and api_key.expires_at <= now:
            raise AuthenticationFailed("API key has expired")
        if creator_role is None or not api_key.created_by.is_active:
            raise AuthenticationFailed("The key's creator no longer belongs to this tenant")
        if api_key.tenant.status != Tenant.Status.ACTIVE:
            raise AuthenticationFailed("The tenant is deactivated")
        _record_use(api_key, now)
        principal = Principal(
            tenant=api_key.tenant,
            user=api_key.created_by,
            role=Role(creator_role),
            # A key never holds more than its creator holds today.
            scopes=frozenset(api_key.scopes) & scopes_for(creator_role),
            actor=request_actor(
                request,
                kind=ActorKind.API_KEY,
                label=f"{api_key.created_by.email} key {api_key.prefix}",
                user_id=api_key.created_by_id,
                api_key_id=api_key.id,
            ),
            api_key=api_key,
        )
        return _authorise(request, principal, self.scope, rate_limited=True)


# When this process last wrote a key's `last_used_at`: a cached key row does not see that write.
_last_use_written: dict[UUID, datetime] = {}


def _record_use(api_key: ApiKey, now: datetime) -> None:
    """Write `last_used_at` at most once per LAST_USED_GRANULARITY and key (per process)."""
    last, written = api_key.last_used_at, _last_use_written.get(api_key.id)
    if written is not None and (last is None or written > last):
        last = written
    if last is not None and now - last <= LAST_USED_GRANULARITY:
        return
    ApiKey.objects.filter(id=api_key.id).update(last_used_at=now)
    if len(_last_use_written) >= VERIFIED_ACCESS_MAX:
        _last_use_written.clear()
    _last_use_written[api_key.id] = now


def scoped(scope: Scope) -> list[Callable[[HttpRequest], Any]]:
    """The auth of a route that needs `scope` (None: any authenticated principal)."""
    auth: list[Callable[[HttpRequest], Any]] = [JWTAuth(scope), ApiKeyAuth(scope)]
    for callback in auth:
        callback.required_scope = scope  # type: ignore[attr-defined]  # read by the scope sweep test
    return auth


def authenticated() -> list[Callable[[HttpRequest], Any]]:
    return scoped(None)


class AnonymousThrottle(BaseThrottle):
    """Rate limit of the public endpoints (sign-in, refresh, invitations), per client address."""

    def __init__(self, route: str = "auth") -> None:
        self.route = route
        self._wait: float | None = None

    def allow_request(self, request: HttpRequest) -> bool:
        decision = ratelimit.check(route_class=self.route, principal=f"ip:{client_ip(request)}", tenant_id=None)
        if decision is None:
            return True
        request.rate_limit = decision  # type: ignore[attr-defined]
        self._wait = decision.retry_after
        return decision.allowed

    def wait(self) -> float | None:
        return self._wait
