"""Emergency controls: kill switches and circuit breakers, recorded here, acted on elsewhere.

A kill switch is recorded by risk; its cancellations are carried out by the orders app, which
sits above this one: engaging emits `risk.kill_switch.engaged` on `ev.risk` (through the outbox,
in the same transaction), the orders-side consumer cancels the working orders in scope, and
reports the count back with `kill_switch_cancelled`. New orders in scope are refused by the
gates (423) from the moment the engaging transaction commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from apps.audit.services import audit_record
from apps.brokers.models import Broker, BrokerAccount
from apps.common.context import Actor
from apps.common.errors import NotFound, StateConflict, ValidationFailed
from apps.common.queries import one_or_not_found
from apps.events.services import outbox_emit
from apps.events.streams import RISK
from apps.risk.config import defaults
from apps.risk.models import CircuitBreaker, KillSwitch
from apps.risk.serializers import breaker_to_dict, kill_switch_to_dict
from apps.tenants.models import Tenant

KILL_SWITCH_ENGAGED = "risk.kill_switch.engaged"
KILL_SWITCH_RELEASED = "risk.kill_switch.released"
BREACHED = "risk.breached"


def _record(
    *,
    tenant_id: UUID,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: UUID,
    events: dict[str, dict[str, Any]],
    after: dict[str, Any],
    before: dict[str, Any] | None = None,
) -> None:
    """Emit a control's events on `ev.risk` and audit the change, in the caller's transaction."""
    for kind, payload in events.items():
        outbox_emit(
            tenant_id=tenant_id,
            stream=RISK,
            kind=kind,
            payload=payload,
            aggregate_type=resource_type,
            aggregate_id=resource_id,
        )
    audit_record(
        tenant_id=tenant_id,
        actor=actor,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        before=before,
        after=after,
    )


def _scope_id(tenant: Tenant, scope: str, scope_id: str | None) -> str:
    if scope == KillSwitch.Scope.TENANT:
        if scope_id:
            raise ValidationFailed("TENANT takes no scope_id", fields={"scope_id": ["must be empty for TENANT"]})
        return ""
    if not scope_id:
        raise ValidationFailed("scope_id required", fields={"scope_id": [f"required for {scope}"]})
    try:
        value = str(UUID(scope_id))
    except ValueError as exc:
        raise ValidationFailed("scope_id must be a UUID", fields={"scope_id": ["must be a UUID"]}) from exc
    if scope == KillSwitch.Scope.ACCOUNT and not BrokerAccount.objects.filter(tenant=tenant, id=value).exists():
        raise NotFound(f"Broker account {value} not found")
    return value


def kill_switch_engage(
    *, tenant: Tenant, actor: Actor, scope: str, scope_id: str | None, reason: str
) -> tuple[KillSwitch, bool]:
    """Engage a kill switch on a scope; engaging an already active scope returns that switch (False)."""
    if scope not in KillSwitch.Scope.values:
        raise ValidationFailed("Invalid scope", fields={"scope": [f"one of {', '.join(KillSwitch.Scope.values)}"]})
    if not reason.strip():
        raise ValidationFailed("A reason is required", fields={"reason": ["required"]})
    key = _scope_id(tenant, scope, scope_id)
    with transaction.atomic(durable=True):
        existing = KillSwitch.objects.filter(tenant=tenant, scope=scope, scope_id=key, active=True).first()
        if existing is not None:
            return existing, False
        now = timezone.now()
        switch = KillSwitch(
            tenant=tenant,
            scope=scope,
            scope_id=key,
            reason=reason.strip()[:500],
            engaged_at=now,
            engaged_by=actor.label[:255],
            created_at=now,
        )
        try:
            with transaction.atomic():
                switch.save(force_insert=True)
        except IntegrityError:
            # Another request engaged the same scope between our read and our insert: that one stands.
            return KillSwitch.objects.get(tenant=tenant, scope=scope, scope_id=key, active=True), False
        payload = kill_switch_to_dict(switch)
        _record(
            tenant_id=tenant.id,
            actor=actor,
            action="risk.kill_switch.engage",
            resource_type="kill_switch",
            resource_id=switch.id,
            events={
                KILL_SWITCH_ENGAGED: payload,
                BREACHED: {"control": "KILL_SWITCH", "action": "HALTED", **payload},
            },
            after=payload,
        )
    return switch, True


@transaction.atomic(durable=True)
def kill_switch_release(*, tenant: Tenant, actor: Actor, kill_switch_id: UUID) -> KillSwitch:
    """Release an active kill switch; new orders in its scope pass the gates again."""
    switch = one_or_not_found(
        KillSwitch.objects.select_for_update(),
        f"Kill switch {kill_switch_id} not found",
        tenant=tenant,
        id=kill_switch_id,
    )
    if not switch.active:
        raise StateConflict(f"Kill switch {switch.id} was already released at {switch.released_at:%Y-%m-%dT%H:%M:%SZ}")
    switch.active, switch.released_at, switch.released_by = False, timezone.now(), actor.label[:255]
    switch.save(update_fields=["active", "released_at", "released_by"])
    payload = kill_switch_to_dict(switch)
    _record(
        tenant_id=tenant.id,
        actor=actor,
        action="risk.kill_switch.release",
        resource_type="kill_switch",
        resource_id=switch.id,
        events={KILL_SWITCH_RELEASED: payload},
        after=payload,
    )
    return switch


@dataclass(frozen=True, slots=True)
class CancelPlan:
    """What an engaged kill switch covers, for the orders app to cancel.

    `account_ids`: the accounts whose working orders are all covered (None for a strategy switch:
    only that strategy's orders); `global_cancel_accounts`: those of them on IB, where one global
    cancel per account does it.
    """

    kill_switch_id: UUID
    tenant_id: UUID
    active: bool
    account_ids: tuple[UUID, ...] | None
    strategy_id: UUID | None
    global_cancel_accounts: tuple[UUID, ...]


def kill_switch_cancellations(*, kill_switch_id: UUID) -> CancelPlan:
    """The cancellations an engaged kill switch asks for (re-read by id: never trust a message)."""
    switch = one_or_not_found(KillSwitch.objects, f"Kill switch {kill_switch_id} not found", id=kill_switch_id)
    accounts = BrokerAccount.objects.filter(tenant_id=switch.tenant_id)
    if switch.scope == KillSwitch.Scope.STRATEGY:
        return CancelPlan(switch.id, switch.tenant_id, switch.active, None, UUID(switch.scope_id), ())
    if switch.scope == KillSwitch.Scope.ACCOUNT:
        accounts = accounts.filter(id=switch.scope_id)
    rows = list(accounts.values_list("id", "broker"))
    return CancelPlan(
        switch.id,
        switch.tenant_id,
        switch.active,
        tuple(account_id for account_id, _ in rows),
        None,
        tuple(account_id for account_id, broker in rows if broker == Broker.IB),
    )


@transaction.atomic(durable=True)
def kill_switch_cancelled(*, kill_switch_id: UUID, count: int) -> None:
    """Record how many working orders the orders app cancelled for this switch."""
    KillSwitch.objects.filter(id=kill_switch_id).update(cancelled_orders=F("cancelled_orders") + count)


# -- circuit breakers ---------------------------------------------------------------------------


def breaker_settings(*, tenant_id: UUID) -> dict[str, dict[str, Any]]:
    """The breakers' thresholds, action and reset for one tenant: `config/risk_rules.yaml`'s
    `breakers`, with the tenant's `tenants.<slug>.breakers` overrides (no query when none are set)."""
    config = defaults()
    if not config.tenants:
        return config.breakers
    slug = Tenant.objects.filter(id=tenant_id).values_list("slug", flat=True).first()
    return config.breakers_for(slug)


def _locked_breaker(*, tenant_id: UUID, kind: str, account_id: UUID | None) -> CircuitBreaker:
    now = timezone.now()
    config = breaker_settings(tenant_id=tenant_id)[kind]
    CircuitBreaker.objects.bulk_create(
        [
            CircuitBreaker(
                tenant_id=tenant_id,
                account_id=account_id,
                kind=kind,
                action=config["action"],
                created_at=now,
                updated_at=now,
            )
        ],
        ignore_conflicts=True,
    )
    return CircuitBreaker.objects.select_for_update().get(tenant_id=tenant_id, kind=kind, account_id=account_id)


def breaker_trip(
    *,
    tenant_id: UUID,
    kind: str,
    account_id: UUID | None,
    reason: str,
    metrics: dict[str, Any],
    actor: Actor,
    manual: bool = False,
    now: datetime | None = None,
) -> CircuitBreaker:
    """Open (trip) a breaker, or refresh the metrics of one already open; call inside a transaction."""
    if kind not in CircuitBreaker.Kind.values:
        raise ValidationFailed(
            "Invalid breaker kind", fields={"kind": [f"one of {', '.join(CircuitBreaker.Kind.values)}"]}
        )
    now = now or timezone.now()
    breaker = _locked_breaker(tenant_id=tenant_id, kind=kind, account_id=account_id)
    config = breaker_settings(tenant_id=tenant_id)[kind]
    automatic = config["reset"] == "AUTO" and not manual
    if breaker.state == CircuitBreaker.State.OPEN:
        breaker.metrics, breaker.updated_at = metrics, now
        if automatic and not breaker.manual:  # the condition persists: the automatic reset moves out
            breaker.reset_at = now + timedelta(seconds=int(config["reset_seconds"]))
            breaker.reason = reason[:500]
        breaker.save(update_fields=["metrics", "updated_at", "reset_at", "reason"])
        return breaker
    breaker.state, breaker.reason, breaker.metrics, breaker.manual = (
        CircuitBreaker.State.OPEN,
        reason[:500],
        metrics,
        manual,
    )
    breaker.action = config["action"]
    breaker.tripped_at, breaker.updated_at = now, now
    breaker.reset_at = now + timedelta(seconds=int(config["reset_seconds"])) if automatic else None
    breaker.trips += 1
    breaker.save()
    payload = breaker_to_dict(breaker)
    _record(
        tenant_id=tenant_id,
        actor=actor,
        action="risk.breaker.trip",
        resource_type="circuit_breaker",
        resource_id=breaker.id,
        events={BREACHED: {"control": "CIRCUIT_BREAKER", **payload}},
        after=payload,
    )
    return breaker


@transaction.atomic(durable=True)
def breaker_trip_manual(
    *, tenant: Tenant, actor: Actor, kind: str, account_id: UUID | None, reason: str
) -> CircuitBreaker:
    """Trip a breaker by hand (it stays open until reset by hand)."""
    if account_id is not None and not BrokerAccount.objects.filter(tenant=tenant, id=account_id).exists():
        raise NotFound(f"Broker account {account_id} not found")
    if not reason.strip():
        raise ValidationFailed("A reason is required", fields={"reason": ["required"]})
    return breaker_trip(
        tenant_id=tenant.id,
        kind=kind,
        account_id=account_id,
        reason=f"manual: {reason.strip()}",
        metrics={},
        actor=actor,
        manual=True,
    )


def _close(breaker: CircuitBreaker, *, actor: Actor, why: str) -> CircuitBreaker:
    before = breaker_to_dict(breaker)
    breaker.state, breaker.reset_at, breaker.updated_at = CircuitBreaker.State.CLOSED, None, timezone.now()
    breaker.reason = why[:500]
    breaker.manual = False
    breaker.save(update_fields=["state", "reset_at", "updated_at", "reason", "manual"])
    payload = breaker_to_dict(breaker)
    _record(
        tenant_id=breaker.tenant_id,
        actor=actor,
        action="risk.breaker.reset",
        resource_type="circuit_breaker",
        resource_id=breaker.id,
        events={"risk.breaker.reset": payload},
        before=before,
        after=payload,
    )
    return breaker


@transaction.atomic(durable=True)
def breaker_reset(*, tenant: Tenant, actor: Actor, breaker_id: UUID) -> CircuitBreaker:
    """Reset (close) a breaker by hand; 409 when it is not open."""
    breaker = one_or_not_found(
        CircuitBreaker.objects.select_for_update(),
        f"Circuit breaker {breaker_id} not found",
        tenant=tenant,
        id=breaker_id,
    )
    if breaker.state != CircuitBreaker.State.OPEN:
        raise StateConflict(f"Circuit breaker {breaker.id} is not open")
    return _close(breaker, actor=actor, why=f"reset by {actor.label}")


def breakers_auto_reset(*, now: datetime, actor: Actor) -> int:
    """Close every automatic breaker whose reset time has come (each in its own transaction)."""
    due = CircuitBreaker.objects.filter(state=CircuitBreaker.State.OPEN, manual=False, reset_at__lte=now)
    closed = 0
    for breaker_id in due.values_list("id", flat=True):
        with transaction.atomic(durable=True):
            breaker = CircuitBreaker.objects.select_for_update().get(id=breaker_id)
            if breaker.state == CircuitBreaker.State.OPEN and breaker.reset_at and breaker.reset_at <= now:
                _close(breaker, actor=actor, why="automatic reset")
                closed += 1
    return closed
