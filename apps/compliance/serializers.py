"""Compliance rows as plain dicts (API replies and audit rows)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from apps.compliance.models import ComplianceRule, RestrictedEntry


def ts(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def rule_to_dict(rule: ComplianceRule) -> dict[str, Any]:
    return {
        "id": str(rule.id),
        "kind": rule.kind,
        "name": rule.name,
        "params": rule.params,
        "enabled": rule.enabled,
        "version": rule.version,
        "created_at": ts(rule.created_at),
        "updated_at": ts(rule.updated_at),
    }


def restricted_to_dict(entry: RestrictedEntry) -> dict[str, Any]:
    return {
        "id": str(entry.id),
        "kind": entry.kind,
        "value": entry.value,
        "reason": entry.reason,
        "valid_from": ts(entry.valid_from),
        "valid_until": ts(entry.valid_until),
        "version": entry.version,
        "created_at": ts(entry.created_at),
        "updated_at": ts(entry.updated_at),
    }
