"""Writes of compliance rules and restricted lists (each audited), and the snapshot the rules read."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from apps.audit.services import audit_record
from apps.brokers.models import BrokerAccount
from apps.common.context import Actor
from apps.common.errors import NotFound, StateConflict, ValidationFailed
from apps.common.queries import one_or_not_found
from apps.compliance import calendars, rules
from apps.compliance.models import ComplianceRule, RestrictedEntry
from apps.compliance.serializers import restricted_to_dict, rule_to_dict
from apps.tenants.models import Tenant


def _params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        return rules.parse_params(rules.RuleKind(kind), params)
    except ValueError as exc:
        raise ValidationFailed("Invalid rule parameters", fields={"params": [str(exc)]}) from exc


def _save(row: Any, conflict: str, **kwargs: Any) -> None:
    try:
        with transaction.atomic():
            row.save(**kwargs)
    except IntegrityError as exc:
        raise StateConflict(conflict, hint="PATCH the existing one instead") from exc


def _audit(tenant: Tenant, actor: Actor, action: str, kind: str, row_id: Any, **change: Any) -> None:
    audit_record(tenant_id=tenant.id, actor=actor, action=action, resource_type=kind, resource_id=row_id, **change)


@transaction.atomic(durable=True)
def compliance_rule_create(
    *, tenant: Tenant, actor: Actor, kind: str, name: str, params: dict[str, Any], enabled: bool
) -> ComplianceRule:
    """Add a rule (one TRADING_HOURS and one WASH_TRADE rule per tenant; restricted-hours windows may repeat)."""
    now = timezone.now()
    rule = ComplianceRule(
        tenant=tenant,
        kind=kind,
        name=name,
        params=_params(kind, params),
        enabled=enabled,
        created_at=now,
        updated_at=now,
    )
    _save(rule, f"This tenant already has a {kind} rule", force_insert=True)
    _audit(tenant, actor, "compliance.rule.create", "compliance_rule", rule.id, after=rule_to_dict(rule))
    return rule


def _locked_rule(tenant: Tenant, rule_id: UUID) -> ComplianceRule:
    return one_or_not_found(
        ComplianceRule.objects.select_for_update(), f"Compliance rule {rule_id} not found", tenant=tenant, id=rule_id
    )


@transaction.atomic(durable=True)
def compliance_rule_update(*, tenant: Tenant, actor: Actor, rule_id: UUID, changes: dict[str, Any]) -> ComplianceRule:
    """Change a rule's name, parameters or enabled flag; bump its version."""
    rule = _locked_rule(tenant, rule_id)
    before = rule_to_dict(rule)
    if "params" in changes:
        rule.params = _params(rule.kind, changes["params"])
    for name in ("name", "enabled"):
        if name in changes:
            setattr(rule, name, changes[name])
    rule.version += 1
    rule.updated_at = timezone.now()
    rule.save()
    _audit(tenant, actor, "compliance.rule.update", "compliance_rule", rule.id, before=before, after=rule_to_dict(rule))
    return rule


@transaction.atomic(durable=True)
def compliance_rule_delete(*, tenant: Tenant, actor: Actor, rule_id: UUID) -> None:
    """Remove a rule."""
    rule = _locked_rule(tenant, rule_id)
    before = rule_to_dict(rule)
    rule.delete()
    _audit(tenant, actor, "compliance.rule.delete", "compliance_rule", rule_id, before=before)


def _restricted_value(tenant: Tenant, kind: str, value: str) -> str:
    if kind == rules.RestrictionKind.SYMBOL:
        cleaned = value.strip().upper()
        if not cleaned:
            raise ValidationFailed("A symbol is required", fields={"value": ["required"]})
        return cleaned
    try:
        account_id = UUID(value)
    except ValueError as exc:
        raise ValidationFailed("An account id is required", fields={"value": ["the broker account id"]}) from exc
    if not BrokerAccount.objects.filter(tenant=tenant, id=account_id).exists():
        raise NotFound(f"Broker account {account_id} not found")
    return str(account_id)


def _check_window(valid_from: datetime | None, valid_until: datetime | None) -> None:
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        raise ValidationFailed("Empty validity window", fields={"valid_until": ["must be after valid_from"]})


@transaction.atomic(durable=True)
def restricted_create(
    *,
    tenant: Tenant,
    actor: Actor,
    kind: str,
    value: str,
    reason: str,
    valid_from: datetime | None,
    valid_until: datetime | None,
) -> RestrictedEntry:
    """Restrict a symbol or an account (with a reason and an optional validity window)."""
    _check_window(valid_from, valid_until)
    if not reason.strip():
        raise ValidationFailed("A reason is required", fields={"reason": ["required"]})
    now = timezone.now()
    entry = RestrictedEntry(
        tenant=tenant,
        kind=kind,
        value=_restricted_value(tenant, kind, value),
        reason=reason.strip(),
        valid_from=valid_from,
        valid_until=valid_until,
        created_at=now,
        updated_at=now,
    )
    _save(entry, f"{kind} {entry.value} is already on the restricted list", force_insert=True)
    _audit(tenant, actor, "compliance.restricted.create", "restricted", entry.id, after=restricted_to_dict(entry))
    return entry


def _locked_entry(tenant: Tenant, entry_id: UUID) -> RestrictedEntry:
    return one_or_not_found(
        RestrictedEntry.objects.select_for_update(),
        f"Restricted entry {entry_id} not found",
        tenant=tenant,
        id=entry_id,
    )


@transaction.atomic(durable=True)
def restricted_update(*, tenant: Tenant, actor: Actor, entry_id: UUID, changes: dict[str, Any]) -> RestrictedEntry:
    """Change an entry's reason or validity window."""
    entry = _locked_entry(tenant, entry_id)
    before = restricted_to_dict(entry)
    for name in ("reason", "valid_from", "valid_until"):
        if name in changes:
            setattr(entry, name, changes[name])
    if not entry.reason.strip():
        raise ValidationFailed("A reason is required", fields={"reason": ["required"]})
    _check_window(entry.valid_from, entry.valid_until)
    entry.version += 1
    entry.updated_at = timezone.now()
    entry.save()
    _audit(
        tenant,
        actor,
        "compliance.restricted.update",
        "restricted",
        entry.id,
        before=before,
        after=restricted_to_dict(entry),
    )
    return entry


@transaction.atomic(durable=True)
def restricted_delete(*, tenant: Tenant, actor: Actor, entry_id: UUID) -> None:
    """Take an entry off the restricted list."""
    entry = _locked_entry(tenant, entry_id)
    before = restricted_to_dict(entry)
    entry.delete()
    _audit(tenant, actor, "compliance.restricted.delete", "restricted", entry_id, before=before)


def compliance_snapshot(
    *,
    tenant_id: UUID,
    account_id: UUID,
    symbol: str,
    calendar: str,
    now: datetime,
    working: Sequence[rules.WorkingOrder],
) -> rules.Snapshot:
    """What the compliance rules read for one order: restrictions, enabled rules, calendar facts."""
    restricted = RestrictedEntry.objects.filter(tenant_id=tenant_id).filter(
        Q(kind=rules.RestrictionKind.SYMBOL, value=symbol.upper())
        | Q(kind=rules.RestrictionKind.ACCOUNT, value=str(account_id))
    )
    return rules.Snapshot(
        now=now,
        calendar=calendars.facts_at_minute(calendar, now),
        restrictions=tuple(
            rules.Restriction(
                str(entry.id),
                rules.RestrictionKind(entry.kind),
                entry.value,
                entry.reason,
                entry.valid_from,
                entry.valid_until,
            )
            for entry in restricted
        ),
        rules=tuple(
            rules.Rule(str(rule.id), rule.version, rules.RuleKind(rule.kind), rule.params)
            for rule in ComplianceRule.objects.filter(tenant_id=tenant_id, enabled=True).order_by("created_at")
        ),
        working=tuple(working),
    )
