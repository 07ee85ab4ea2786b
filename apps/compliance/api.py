"""The compliance router of API.md: `/compliance/rules` and `/compliance/restricted`."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.http import HttpRequest
from ninja import Query, Router, Status

from apps.common.errors import ValidationFailed
from apps.common.pagination import serialized_page
from apps.common.schemas import Page
from apps.compliance import selectors, services
from apps.compliance.schemas import (
    RestrictedIn,
    RestrictedOut,
    RestrictedPatch,
    RestrictedQuery,
    RuleIn,
    RuleOut,
    RulePatch,
    RuleQuery,
)
from apps.compliance.serializers import restricted_to_dict, rule_to_dict
from apps.tenants.auth import scoped
from apps.tenants.principal import actor_kwargs, principal_of

router = Router(tags=["compliance"])
READ = ("risk:manage", "orders:view")


@router.get("/rules", response=Page[RuleOut], auth=scoped(READ))
def list_compliance_rules(request: HttpRequest, query: Query[RuleQuery]) -> dict[str, Any]:
    rows = selectors.compliance_rule_list(tenant=principal_of(request).tenant, kind=query.kind)
    return serialized_page(rows, limit=query.limit, cursor=query.cursor, serialize=rule_to_dict)


@router.post("/rules", response={201: RuleOut}, auth=scoped("risk:manage"))
def create_compliance_rule(request: HttpRequest, payload: RuleIn) -> Status:
    rule = services.compliance_rule_create(
        **actor_kwargs(request), kind=payload.kind, name=payload.name, params=payload.params, enabled=payload.enabled
    )
    return Status(201, rule_to_dict(rule))


@router.get("/rules/{rule_id}", response=RuleOut, auth=scoped(READ))
def get_compliance_rule(request: HttpRequest, rule_id: UUID) -> dict[str, Any]:
    return rule_to_dict(selectors.compliance_rule_get(tenant=principal_of(request).tenant, rule_id=rule_id))


@router.patch("/rules/{rule_id}", response=RuleOut, auth=scoped("risk:manage"))
def update_compliance_rule(request: HttpRequest, rule_id: UUID, payload: RulePatch) -> dict[str, Any]:
    changes = {name: value for name, value in payload.model_dump(exclude_unset=True).items() if value is not None}
    return rule_to_dict(services.compliance_rule_update(**actor_kwargs(request), rule_id=rule_id, changes=changes))


@router.delete("/rules/{rule_id}", response={204: None}, auth=scoped("risk:manage"))
def delete_compliance_rule(request: HttpRequest, rule_id: UUID) -> Status:
    services.compliance_rule_delete(**actor_kwargs(request), rule_id=rule_id)
    return Status(204, None)


@router.get("/restricted", response=Page[RestrictedOut], auth=scoped(READ))
def list_restricted(request: HttpRequest, query: Query[RestrictedQuery]) -> dict[str, Any]:
    rows = selectors.restricted_list(tenant=principal_of(request).tenant, kind=query.kind, value=query.value)
    return serialized_page(rows, limit=query.limit, cursor=query.cursor, serialize=restricted_to_dict)


@router.post("/restricted", response={201: RestrictedOut}, auth=scoped("risk:manage"))
def create_restricted(request: HttpRequest, payload: RestrictedIn) -> Status:
    entry = services.restricted_create(
        **actor_kwargs(request),
        kind=payload.kind,
        value=payload.value,
        reason=payload.reason,
        valid_from=payload.valid_from,
        valid_until=payload.valid_until,
    )
    return Status(201, restricted_to_dict(entry))


@router.get("/restricted/{entry_id}", response=RestrictedOut, auth=scoped(READ))
def get_restricted(request: HttpRequest, entry_id: UUID) -> dict[str, Any]:
    return restricted_to_dict(selectors.restricted_get(tenant=principal_of(request).tenant, entry_id=entry_id))


@router.patch("/restricted/{entry_id}", response=RestrictedOut, auth=scoped("risk:manage"))
def update_restricted(request: HttpRequest, entry_id: UUID, payload: RestrictedPatch) -> dict[str, Any]:
    changes = {name: getattr(payload, name) for name in payload.model_fields_set}
    if "reason" in changes and changes["reason"] is None:
        raise ValidationFailed("A reason is required", fields={"reason": ["cannot be null"]})
    return restricted_to_dict(services.restricted_update(**actor_kwargs(request), entry_id=entry_id, changes=changes))


@router.delete("/restricted/{entry_id}", response={204: None}, auth=scoped("risk:manage"))
def delete_restricted(request: HttpRequest, entry_id: UUID) -> Status:
    services.restricted_delete(**actor_kwargs(request), entry_id=entry_id)
    return Status(204, None)
