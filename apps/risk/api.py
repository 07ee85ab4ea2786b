"""The risk router of API.md: limits, overrides, kill switches, circuit breakers, account settings, status."""

from __future__ import annotations

from functools import partial
from typing import Any
from uuid import UUID

from django.http import HttpRequest
from django.utils import timezone
from ninja import Query, Router, Status

from apps.brokers.selectors import broker_account_get
from apps.common.pagination import serialized_page
from apps.common.schemas import Page
from apps.risk import selectors
from apps.risk.schemas import (
    AccountRiskOut,
    AccountRiskPatch,
    ActiveQuery,
    BreakerIn,
    BreakerOut,
    BreakerQuery,
    KillSwitchIn,
    KillSwitchOut,
    LimitIn,
    LimitOut,
    LimitPatch,
    LimitQuery,
    OverrideIn,
    OverrideOut,
    StatusOut,
)
from apps.risk.serializers import (
    account_risk_to_dict,
    breaker_to_dict,
    kill_switch_to_dict,
    limit_to_dict,
    override_to_dict,
)
from apps.risk.services import controls, limits
from apps.tenants.auth import scoped
from apps.tenants.principal import actor_kwargs, principal_of

router = Router(tags=["risk"])
READ = ("risk:manage", "orders:view")


@router.get("/status", response=StatusOut, auth=scoped(READ))
def get_risk_status(request: HttpRequest) -> dict[str, Any]:
    principal = principal_of(request)
    return selectors.risk_status(tenant=principal.tenant, user=principal.user, role=principal.role)


@router.get("/limits", response=Page[LimitOut], auth=scoped(READ))
def list_risk_limits(request: HttpRequest, query: Query[LimitQuery]) -> dict[str, Any]:
    rows = selectors.risk_limit_list(tenant=principal_of(request).tenant, kind=query.kind, scope=query.scope)
    return serialized_page(rows, limit=query.limit, cursor=query.cursor, serialize=limit_to_dict)


@router.post("/limits", response={201: LimitOut}, auth=scoped("risk:manage"))
def create_risk_limit(request: HttpRequest, payload: LimitIn) -> Status:
    data = limits.LimitData(
        kind=payload.kind,
        scope=payload.scope,
        scope_id=payload.scope_id or "",
        value=payload.value,
        period=payload.period,
        enabled=payload.enabled,
    )
    return Status(201, limit_to_dict(limits.risk_limit_create(**actor_kwargs(request), data=data)))


@router.get("/limits/{limit_id}", response=LimitOut, auth=scoped(READ))
def get_risk_limit(request: HttpRequest, limit_id: UUID) -> dict[str, Any]:
    return limit_to_dict(selectors.risk_limit_get(tenant=principal_of(request).tenant, limit_id=limit_id))


@router.patch("/limits/{limit_id}", response=LimitOut, auth=scoped("risk:manage"))
def update_risk_limit(request: HttpRequest, limit_id: UUID, payload: LimitPatch) -> dict[str, Any]:
    changes = {name: getattr(payload, name) for name in payload.model_fields_set}
    return limit_to_dict(limits.risk_limit_update(**actor_kwargs(request), limit_id=limit_id, changes=changes))


@router.delete("/limits/{limit_id}", response={204: None}, auth=scoped("risk:manage"))
def delete_risk_limit(request: HttpRequest, limit_id: UUID) -> Status:
    limits.risk_limit_delete(**actor_kwargs(request), limit_id=limit_id)
    return Status(204, None)


@router.get("/overrides", response=Page[OverrideOut], auth=scoped(READ))
def list_risk_overrides(request: HttpRequest, query: Query[ActiveQuery]) -> dict[str, Any]:
    rows = selectors.risk_override_list(tenant=principal_of(request).tenant, active=query.active)
    serialize = partial(override_to_dict, now=timezone.now())
    return serialized_page(rows, limit=query.limit, cursor=query.cursor, serialize=serialize)


@router.post("/overrides", response={201: OverrideOut}, auth=scoped("risk:override"))
def create_risk_override(request: HttpRequest, payload: OverrideIn) -> Status:
    override = limits.risk_override_create(
        **actor_kwargs(request),
        limit_id=payload.limit_id,
        value=payload.value,
        reason=payload.reason,
        valid_until=payload.valid_until,
        valid_from=payload.valid_from,
        account_id=payload.account_id,
    )
    return Status(201, override_to_dict(override, now=timezone.now()))


@router.delete("/overrides/{override_id}", response=OverrideOut, auth=scoped("risk:override"))
def revoke_risk_override(request: HttpRequest, override_id: UUID) -> dict[str, Any]:
    override = limits.risk_override_revoke(**actor_kwargs(request), override_id=override_id)
    return override_to_dict(override, now=timezone.now())


@router.get("/kill-switch", response=Page[KillSwitchOut], auth=scoped(READ))
def list_kill_switches(request: HttpRequest, query: Query[ActiveQuery]) -> dict[str, Any]:
    rows = selectors.kill_switch_list(tenant=principal_of(request).tenant, active=query.active)
    return serialized_page(rows, limit=query.limit, cursor=query.cursor, serialize=kill_switch_to_dict)


@router.post("/kill-switch", response={200: KillSwitchOut, 201: KillSwitchOut}, auth=scoped("risk:manage"))
def engage_kill_switch(request: HttpRequest, payload: KillSwitchIn) -> Status:
    switch, created = controls.kill_switch_engage(
        **actor_kwargs(request), scope=payload.scope, scope_id=payload.scope_id, reason=payload.reason
    )
    return Status(201 if created else 200, kill_switch_to_dict(switch))


@router.get("/kill-switch/{kill_switch_id}", response=KillSwitchOut, auth=scoped(READ))
def get_kill_switch(request: HttpRequest, kill_switch_id: UUID) -> dict[str, Any]:
    switch = selectors.kill_switch_get(tenant=principal_of(request).tenant, kill_switch_id=kill_switch_id)
    return kill_switch_to_dict(switch)


@router.delete("/kill-switch/{kill_switch_id}", response=KillSwitchOut, auth=scoped("risk:override"))
def release_kill_switch(request: HttpRequest, kill_switch_id: UUID) -> dict[str, Any]:
    return kill_switch_to_dict(controls.kill_switch_release(**actor_kwargs(request), kill_switch_id=kill_switch_id))


@router.get("/breakers", response=Page[BreakerOut], auth=scoped(READ))
def list_circuit_breakers(request: HttpRequest, query: Query[BreakerQuery]) -> dict[str, Any]:
    rows = selectors.breaker_list(tenant=principal_of(request).tenant, state=query.state)
    return serialized_page(rows, limit=query.limit, cursor=query.cursor, serialize=breaker_to_dict)


@router.post("/breakers", response={201: BreakerOut}, auth=scoped("risk:manage"))
def trip_circuit_breaker(request: HttpRequest, payload: BreakerIn) -> Status:
    breaker = controls.breaker_trip_manual(
        **actor_kwargs(request), kind=payload.kind, account_id=payload.account_id, reason=payload.reason
    )
    return Status(201, breaker_to_dict(breaker))


@router.post("/breakers/{breaker_id}/reset", response=BreakerOut, auth=scoped("risk:override"))
def reset_circuit_breaker(request: HttpRequest, breaker_id: UUID) -> dict[str, Any]:
    return breaker_to_dict(controls.breaker_reset(**actor_kwargs(request), breaker_id=breaker_id))


@router.get("/accounts/{account_id}", response=AccountRiskOut, auth=scoped(READ))
def get_account_risk(request: HttpRequest, account_id: UUID) -> dict[str, Any]:
    principal = principal_of(request)
    account = broker_account_get(
        tenant=principal.tenant, user=principal.user, role=principal.role, account_id=account_id
    )
    return account_risk_to_dict(selectors.account_risk_get(account=account))


@router.patch("/accounts/{account_id}", response=AccountRiskOut, auth=scoped("risk:manage"))
def update_account_risk(request: HttpRequest, account_id: UUID, payload: AccountRiskPatch) -> dict[str, Any]:
    changes = {name: getattr(payload, name) for name in payload.model_fields_set}
    return account_risk_to_dict(
        limits.account_risk_update(**actor_kwargs(request), account_id=account_id, changes=changes)
    )
