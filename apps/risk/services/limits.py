"""Writes of limits, overrides and account risk settings; every change audited in its transaction."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.brokers.models import BrokerAccount
from apps.common.context import Actor
from apps.common.errors import NotFound, StateConflict, ValidationFailed
from apps.compliance.calendars import known
from apps.risk import sessions
from apps.risk.config import defaults
from apps.risk.derisk import TradingState
from apps.risk.gates import PERIOD_KINDS, LimitKind, LimitScope
from apps.risk.models import AccountRisk, RiskLimit, RiskOverride
from apps.risk.serializers import account_risk_to_dict, limit_to_dict, override_to_dict
from apps.tenants.models import Tenant

PERIOD = re.compile(r"^(\d{1,6})(s|m|h|d)$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
PERCENT_KINDS = frozenset({LimitKind.MAX_GROSS_EXPOSURE, LimitKind.CONCENTRATION, LimitKind.PRICE_BAND})


def period_seconds(period: str) -> int:
    """'1s', '10s', '1m', '1h', '1d' → seconds; ValidationFailed otherwise."""
    match = PERIOD.match(period.strip())
    if not match or int(match.group(1)) == 0:
        raise ValidationFailed("Invalid period", fields={"period": ['a duration such as "1s", "10s", "1m", "1d"']})
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]


@dataclass(frozen=True, slots=True)
class LimitData:
    kind: str
    scope: str
    scope_id: str
    value: Decimal
    period: str | None
    enabled: bool


def _check_scope(tenant: Tenant, scope: LimitScope, scope_id: str) -> str:
    if scope == LimitScope.TENANT:
        if scope_id:
            raise ValidationFailed("TENANT limits take no scope_id", fields={"scope_id": ["must be empty for TENANT"]})
        return ""
    if not scope_id:
        raise ValidationFailed("scope_id required", fields={"scope_id": [f"required for {scope.value}"]})
    if scope == LimitScope.INSTRUMENT:
        return scope_id.strip().upper() if not _is_uuid(scope_id) else str(UUID(scope_id))
    if not _is_uuid(scope_id):
        raise ValidationFailed("scope_id must be a UUID", fields={"scope_id": [f"the {scope.value.lower()} id"]})
    if scope == LimitScope.ACCOUNT and not BrokerAccount.objects.filter(tenant=tenant, id=scope_id).exists():
        raise NotFound(f"Broker account {scope_id} not found")
    return str(UUID(scope_id))


def _is_uuid(value: str) -> bool:
    try:
        UUID(value)
    except ValueError:
        return False
    return True


def _validated(tenant: Tenant, data: LimitData) -> dict[str, Any]:
    kind, scope = LimitKind(data.kind), LimitScope(data.scope)
    problems: dict[str, list[str]] = {}
    if data.value < 0:
        problems["value"] = ["must not be negative"]
    if kind in (LimitKind.MAX_OPEN_ORDERS, LimitKind.ORDER_RATE) and data.value != data.value.to_integral_value():
        problems["value"] = ["must be a whole number of orders"]
    if kind in PERIOD_KINDS and not data.period:
        problems["period"] = [f"required for {kind.value}"]
    if kind not in PERIOD_KINDS and data.period:
        problems["period"] = [f"{kind.value} takes no period"]
    if problems:
        raise ValidationFailed("The limit is invalid", fields=problems)
    seconds = period_seconds(data.period) if data.period else None
    return {
        "kind": kind.value,
        "scope": scope.value,
        "scope_id": _check_scope(tenant, scope, data.scope_id),
        "value": data.value,
        "period": data.period or "",
        "period_seconds": seconds,
        "enabled": data.enabled,
    }


def _save(limit: RiskLimit, **kwargs: Any) -> None:
    try:
        with transaction.atomic():
            limit.save(**kwargs)
    except IntegrityError as exc:
        raise StateConflict(
            f"A {limit.kind} limit for this scope and period already exists",
            details={"kind": limit.kind, "scope": limit.scope, "scope_id": limit.scope_id},
            hint="PATCH the existing limit instead",
        ) from exc


@transaction.atomic(durable=True)
def risk_limit_create(*, tenant: Tenant, actor: Actor, data: LimitData) -> RiskLimit:
    """Create a limit (version 1)."""
    now = timezone.now()
    limit = RiskLimit(tenant=tenant, created_at=now, updated_at=now, **_validated(tenant, data))
    _save(limit, force_insert=True)
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="risk.limit.create",
        resource_type="risk_limit",
        resource_id=limit.id,
        after=limit_to_dict(limit),
    )
    return limit


def _locked_limit(*, tenant: Tenant, limit_id: UUID) -> RiskLimit:
    try:
        return RiskLimit.objects.select_for_update().get(tenant=tenant, id=limit_id)
    except RiskLimit.DoesNotExist as exc:
        raise NotFound(f"Risk limit {limit_id} not found") from exc


@transaction.atomic(durable=True)
def risk_limit_update(*, tenant: Tenant, actor: Actor, limit_id: UUID, changes: dict[str, Any]) -> RiskLimit:
    """Change a limit's value, period or enabled flag (kind and scope are fixed); bump its version."""
    limit = _locked_limit(tenant=tenant, limit_id=limit_id)
    for name in ("value", "enabled"):
        if name in changes and changes[name] is None:
            raise ValidationFailed("Invalid limit change", fields={name: ["cannot be null"]})
    before = limit_to_dict(limit)
    merged = LimitData(
        kind=limit.kind,
        scope=limit.scope,
        scope_id=limit.scope_id,
        value=changes.get("value", limit.value),
        period=changes.get("period", limit.period or None),
        enabled=changes.get("enabled", limit.enabled),
    )
    for name, value in _validated(tenant, merged).items():
        setattr(limit, name, value)
    limit.version += 1
    limit.updated_at = timezone.now()
    _save(limit)
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="risk.limit.update",
        resource_type="risk_limit",
        resource_id=limit.id,
        before=before,
        after=limit_to_dict(limit),
    )
    return limit


@transaction.atomic(durable=True)
def risk_limit_delete(*, tenant: Tenant, actor: Actor, limit_id: UUID) -> None:
    """Delete a limit (and its overrides)."""
    limit = _locked_limit(tenant=tenant, limit_id=limit_id)
    before = limit_to_dict(limit)
    limit.delete()
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="risk.limit.delete",
        resource_type="risk_limit",
        resource_id=limit_id,
        before=before,
    )


@transaction.atomic(durable=True)
def risk_override_create(
    *,
    tenant: Tenant,
    actor: Actor,
    limit_id: UUID,
    value: Decimal,
    reason: str,
    valid_until: datetime,
    account_id: UUID | None = None,
    valid_from: datetime | None = None,
) -> RiskOverride:
    """Grant a time-boxed exception to one limit (optionally for one account)."""
    limit = _locked_limit(tenant=tenant, limit_id=limit_id)
    now = timezone.now()
    start = valid_from or now
    longest = timedelta(hours=defaults().max_override_hours)
    problems: dict[str, list[str]] = {}
    if value < 0:
        problems["value"] = ["must not be negative"]
    if valid_until <= max(start, now):
        problems["valid_until"] = ["must be in the future and after valid_from"]
    elif valid_until - start > longest:
        problems["valid_until"] = [f"an override lasts at most {defaults().max_override_hours} hours"]
    if not reason.strip():
        problems["reason"] = ["required"]
    if problems:
        raise ValidationFailed("The override is invalid", fields=problems)
    account = None
    if account_id is not None:
        account = BrokerAccount.objects.filter(tenant=tenant, id=account_id).first()
        if account is None:
            raise NotFound(f"Broker account {account_id} not found")
    override = RiskOverride.objects.create(
        id=uuid.uuid4(),
        tenant=tenant,
        limit=limit,
        account=account,
        value=value,
        reason=reason.strip(),
        valid_from=start,
        valid_until=valid_until,
        created_by=actor.label[:255],
        created_at=now,
    )
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="risk.override.create",
        resource_type="risk_override",
        resource_id=override.id,
        after={**override_to_dict(override, now=now), "limit_version": limit.version},
    )
    return override


@transaction.atomic(durable=True)
def risk_override_revoke(*, tenant: Tenant, actor: Actor, override_id: UUID) -> RiskOverride:
    """End an override now (idempotent for one already revoked or expired)."""
    try:
        override = RiskOverride.objects.select_for_update().get(tenant=tenant, id=override_id)
    except RiskOverride.DoesNotExist as exc:
        raise NotFound(f"Override {override_id} not found") from exc
    now = timezone.now()
    if override.revoked_at is None:
        override.revoked_at = now
        override.save(update_fields=["revoked_at"])
        audit_record(
            tenant_id=tenant.id,
            actor=actor,
            action="risk.override.revoke",
            resource_type="risk_override",
            resource_id=override.id,
            after=override_to_dict(override, now=now),
        )
    return override


def account_risk_for(account: BrokerAccount) -> AccountRisk:
    """The account's risk row, created with the defaults on first use (insert-or-nothing)."""
    row = AccountRisk.objects.filter(account=account).first()
    if row is not None:
        return row
    AccountRisk.objects.bulk_create(
        [AccountRisk(account=account, tenant_id=account.tenant_id, updated_at=timezone.now())], ignore_conflicts=True
    )
    return AccountRisk.objects.get(account=account)


@transaction.atomic(durable=True)
def account_risk_update(*, tenant: Tenant, actor: Actor, account_id: UUID, changes: dict[str, Any]) -> AccountRisk:
    """Set an account's capital, manual trading state or calendar."""
    account = BrokerAccount.objects.select_for_update(no_key=True).filter(tenant=tenant, id=account_id).first()
    if account is None:
        raise NotFound(f"Broker account {account_id} not found")
    row = account_risk_for(account)
    before = account_risk_to_dict(row)
    problems: dict[str, list[str]] = {}
    if "capital" in changes and changes["capital"] is not None and changes["capital"] <= 0:
        problems["capital"] = ["must be positive"]
    if "trading_state" in changes and changes["trading_state"] not in TradingState.__members__:
        problems["trading_state"] = [f"one of {', '.join(TradingState)}"]
    if "calendar" in changes and changes["calendar"] and not known(changes["calendar"]):
        problems["calendar"] = ["ALWAYS_OPEN or an exchange_calendars name such as XNYS"]
    if problems:
        raise ValidationFailed("Invalid account risk settings", fields=problems)
    if changes.get("trading_state") is None:
        changes.pop("trading_state", None)
    for name, value in changes.items():
        # capital None: back to the default capital; calendar None: back to the broker's default.
        setattr(row, name, "" if value is None and name == "calendar" else value)
    row.version += 1
    row.updated_at = timezone.now()
    row.save()
    transaction.on_commit(partial(sessions.forget, account.id))
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="risk.account.update",
        resource_type="account_risk",
        resource_id=account.id,
        before=before,
        after=account_risk_to_dict(row),
    )
    return row
