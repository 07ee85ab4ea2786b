"""The authenticated principal a request acts as: one user or API key, inside one tenant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.http import HttpRequest

from apps.common.context import Actor
from apps.tenants.models import ApiKey, Tenant, User
from apps.tenants.scopes import Role


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: Tenant
    user: User
    role: Role
    scopes: frozenset[str]
    actor: Actor
    api_key: ApiKey | None = None
    token_family_id: UUID | None = None
    # A token issued while the tenant requires MFA the user has not yet set up: it may only
    # enrol (no scopes at all).
    mfa_enrolment_only: bool = False

    @property
    def rate_key(self) -> str:
        return f"key:{self.api_key.id}" if self.api_key else f"user:{self.user.id}"


def principal_of(request: HttpRequest) -> Principal:
    """The principal the auth of a route put on the request."""
    return request.auth  # type: ignore[attr-defined, no-any-return]


def viewer_kwargs(request: HttpRequest) -> dict[str, Any]:
    """Keyword arguments of selectors that filter by the caller's account grants."""
    principal = principal_of(request)
    return {"tenant": principal.tenant, "user": principal.user, "role": principal.role}


def actor_kwargs(request: HttpRequest) -> dict[str, Any]:
    """Keyword arguments of services that act in the caller's tenant under the caller's name."""
    principal = principal_of(request)
    return {"tenant": principal.tenant, "actor": principal.actor}
