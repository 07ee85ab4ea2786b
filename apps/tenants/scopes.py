"""Roles and the scopes they grant: the one table of API.md, in one place."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "ADMIN"
    MANAGER = "MANAGER"
    TRADER = "TRADER"
    VIEWER = "VIEWER"


VIEWER_SCOPES = frozenset(
    {
        "orders:view",
        "positions:view",
        "pnl:view",
        "brokers:view",
        "strategies:view",
        "allocator:view",
        "rebalance:view",
        "marketdata:view",
    }
)
TRADER_SCOPES = VIEWER_SCOPES | {
    "orders:place",
    "orders:modify",
    "orders:cancel",
    "strategies:run",
    "marketdata:subscribe",
    "allocator:run",
    "rebalance:run",
}
MANAGER_SCOPES = TRADER_SCOPES | {
    "tenants:manage",
    "brokers:connect",
    "risk:manage",
    "risk:override",
    "webhooks:manage",
    "strategies:manage",
}
ADMIN_SCOPES = MANAGER_SCOPES | {"tenants:admin", "system:admin"}

ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.ADMIN: frozenset(ADMIN_SCOPES),
    Role.MANAGER: frozenset(MANAGER_SCOPES),
    Role.TRADER: frozenset(TRADER_SCOPES),
    Role.VIEWER: VIEWER_SCOPES,
}
ALL_SCOPES = ROLE_SCOPES[Role.ADMIN]

# A member may hand out (to invitations, role changes) only roles at or below their own.
ROLE_RANK = {Role.VIEWER: 0, Role.TRADER: 1, Role.MANAGER: 2, Role.ADMIN: 3}


def scopes_for(role: Role | str) -> frozenset[str]:
    return ROLE_SCOPES[Role(role)]


def unknown_scopes(scopes: list[str] | set[str] | tuple[str, ...]) -> list[str]:
    return sorted(set(scopes) - ALL_SCOPES)


def may_grant(granter: Role | str, role: Role | str) -> bool:
    return ROLE_RANK[Role(granter)] >= ROLE_RANK[Role(role)]
