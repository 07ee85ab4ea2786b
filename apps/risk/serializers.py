"""Risk rows as plain dicts (the API's replies, the audit rows and the outbox payloads)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from apps.risk.gates import text
from apps.risk.models import AccountRisk, CircuitBreaker, KillSwitch, RiskLimit, RiskOverride


def dec(value: Decimal | None) -> str | None:
    return text(value)


def ts(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def limit_to_dict(limit: RiskLimit) -> dict[str, Any]:
    return {
        "id": str(limit.id),
        "kind": limit.kind,
        "scope": limit.scope,
        "scope_id": limit.scope_id or None,
        "value": dec(limit.value),
        "period": limit.period or None,
        "enabled": limit.enabled,
        "version": limit.version,
        "created_at": ts(limit.created_at),
        "updated_at": ts(limit.updated_at),
    }


def override_active(override: RiskOverride, now: datetime) -> bool:
    return override.revoked_at is None and override.valid_from <= now < override.valid_until


def override_to_dict(override: RiskOverride, *, now: datetime) -> dict[str, Any]:
    return {
        "id": str(override.id),
        "limit_id": str(override.limit_id),
        "account_id": str(override.account_id) if override.account_id else None,
        "value": dec(override.value),
        "reason": override.reason,
        "valid_from": ts(override.valid_from),
        "valid_until": ts(override.valid_until),
        "revoked_at": ts(override.revoked_at),
        "active": override_active(override, now),
        "created_by": override.created_by,
        "created_at": ts(override.created_at),
    }


def kill_switch_to_dict(switch: KillSwitch) -> dict[str, Any]:
    return {
        "id": str(switch.id),
        "scope": switch.scope,
        "scope_id": switch.scope_id or None,
        "reason": switch.reason,
        "active": switch.active,
        "engaged_at": ts(switch.engaged_at),
        "engaged_by": switch.engaged_by,
        "released_at": ts(switch.released_at),
        "released_by": switch.released_by or None,
        "cancelled_orders": switch.cancelled_orders,
    }


def breaker_to_dict(breaker: CircuitBreaker) -> dict[str, Any]:
    return {
        "id": str(breaker.id),
        "kind": breaker.kind,
        "account_id": str(breaker.account_id) if breaker.account_id else None,
        "state": breaker.state,
        "action": breaker.action,
        "reason": breaker.reason,
        "metrics": breaker.metrics,
        "manual": breaker.manual,
        "tripped_at": ts(breaker.tripped_at),
        "reset_at": ts(breaker.reset_at),
        "trips": breaker.trips,
        "updated_at": ts(breaker.updated_at),
    }


def account_risk_to_dict(row: AccountRisk) -> dict[str, Any]:
    return {
        "account_id": str(row.account_id),
        "capital": dec(row.capital),
        "peak_equity": dec(row.peak_equity),
        "trading_state": row.trading_state,
        "calendar": row.calendar or None,
        "derisk_state": row.derisk_state,
        "version": row.version,
    }
