"""Sweeps over every route of the API, so that a new endpoint cannot forget auth, scopes or tenancy.

When you add an endpoint:
- a public one (no auth) goes into PUBLIC_ROUTES, with a reason;
- each new path parameter name gets a factory in PATH_PARAM_FACTORIES that creates an object of
  that kind in the given tenant and returns its id (used for the cross-tenant 404 check);
- a route whose body must be valid before the 404 can show gets an entry in BODIES (and HEADERS
  for required headers such as If-Match).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.utils import timezone

from apps.allocator.models import AllocatorJob
from apps.brokers.models import BrokerAccount, Instrument, ReconciliationRun
from apps.compliance.models import ComplianceRule, RestrictedEntry
from apps.marketdata.models import MarketDataSubscription
from apps.orders.models import Order
from apps.portfolio.models import Position
from apps.risk.models import CircuitBreaker, KillSwitch, RiskLimit, RiskOverride
from apps.tenants.models import ApiKey, Invitation, Tenant
from apps.tenants.scopes import ROLE_RANK, Role, scopes_for
from oms.api import api
from tests.conftest import Api, make_member

pytestmark = pytest.mark.django_db

PUBLIC_ROUTES = {
    ("POST", "/auth/token"): "sign-in",
    ("POST", "/auth/token/refresh"): "token rotation proves itself with the refresh token",
    ("POST", "/tenants/invitations/accept"): "the invitation token is the credential",
    ("GET", "/health/live"): "probes",
    ("GET", "/health/ready"): "probes",
    ("GET", "/version"): "public build information",
    ("GET", "/allocator/reports/download"): "the signed, expiring token in the link is the credential",
}


def _membership(tenant: Tenant) -> str:
    return str(make_member(tenant, Role.VIEWER).user.memberships.get(tenant=tenant).id)


def _api_key(tenant: Tenant) -> str:
    member = make_member(tenant, Role.ADMIN)
    return str(
        ApiKey.objects.create(
            tenant=tenant, created_by=member.user, name="k", prefix=uuid.uuid4().hex[:12], secret_hash="0" * 64
        ).id
    )


def _invitation(tenant: Tenant) -> str:
    return str(
        Invitation.objects.create(
            tenant=tenant,
            email=f"{uuid.uuid4().hex[:8]}@example.com",
            role=Role.VIEWER,
            token_hash=uuid.uuid4().hex,
            expires_at=timezone.now() + timezone.timedelta(days=1),
        ).id
    )


def _allocator_job(tenant: Tenant) -> str:
    return str(
        AllocatorJob.objects.create(
            tenant=tenant, payload={"household": {}}, idempotency_key=uuid.uuid4().hex, assumptions={}
        ).id
    )


def _broker_account(tenant: Tenant) -> str:
    return str(
        BrokerAccount.objects.create(
            tenant=tenant, broker="PAPER", account_code=f"P{uuid.uuid4().hex[:8]}", mode="PAPER"
        ).id
    )


def _order(tenant: Tenant) -> str:
    instrument, _ = Instrument.objects.get_or_create(
        symbol="SWEEP", exchange="NASDAQ", currency="USD", defaults={"asset_class": "STK", "tick_size": "0.01"}
    )
    now = timezone.now()
    return str(
        Order.objects.create(
            tenant=tenant,
            account_id=_broker_account(tenant),
            instrument=instrument,
            symbol="SWEEP",
            client_order_id=uuid.uuid4().hex,
            side="BUY",
            quantity=1,
            order_type="MKT",
            time_in_force="DAY",
            created_at=now,
            updated_at=now,
        ).id
    )


def _position_symbol(tenant: Tenant) -> str:
    order = Order.objects.get(id=_order(tenant))
    now = timezone.now()
    Position.objects.create(
        tenant=tenant,
        account_id=order.account_id,
        instrument_id=order.instrument_id,
        symbol="SWEEP",
        currency="USD",
        quantity=1,
        created_at=now,
        updated_at=now,
    )
    return "SWEEP"


def _user(tenant: Tenant) -> str:
    return str(make_member(tenant, Role.VIEWER).user.id)


def _reconciliation_run(tenant: Tenant) -> str:
    account = BrokerAccount.objects.get(id=_broker_account(tenant))
    return str(
        ReconciliationRun.objects.create(tenant=tenant, account=account, trigger="MANUAL", status="REQUESTED").id
    )


def _risk_limit(tenant: Tenant) -> str:
    now = timezone.now()
    return str(
        RiskLimit.objects.create(
            tenant=tenant, kind="MAX_ORDER_QTY", scope="TENANT", value=1, created_at=now, updated_at=now
        ).id
    )


def _risk_override(tenant: Tenant) -> str:
    now = timezone.now()
    limit = RiskLimit.objects.get(id=_risk_limit(tenant))
    return str(
        RiskOverride.objects.create(
            tenant=tenant,
            limit=limit,
            value=2,
            reason="sweep",
            valid_from=now,
            valid_until=now + timezone.timedelta(hours=1),
            created_at=now,
        ).id
    )


def _kill_switch(tenant: Tenant) -> str:
    now = timezone.now()
    return str(
        KillSwitch.objects.create(tenant=tenant, scope="TENANT", reason="sweep", engaged_at=now, created_at=now).id
    )


def _breaker(tenant: Tenant) -> str:
    now = timezone.now()
    return str(
        CircuitBreaker.objects.create(
            tenant=tenant, kind="REJECT_STORM", state="OPEN", created_at=now, updated_at=now, tripped_at=now
        ).id
    )


def _compliance_rule(tenant: Tenant) -> str:
    now = timezone.now()
    return str(
        ComplianceRule.objects.create(
            tenant=tenant, kind="WASH_TRADE", params={"scope": "ACCOUNT"}, created_at=now, updated_at=now
        ).id
    )


def _restricted_entry(tenant: Tenant) -> str:
    now = timezone.now()
    return str(
        RestrictedEntry.objects.create(
            tenant=tenant, kind="SYMBOL", value="SWEEP", reason="sweep", created_at=now, updated_at=now
        ).id
    )


def _marketdata_subscription(tenant: Tenant) -> str:
    instrument, _ = Instrument.objects.get_or_create(
        symbol="SWEEP", exchange="NASDAQ", currency="USD", defaults={"asset_class": "STK", "tick_size": "0.01"}
    )
    return str(
        MarketDataSubscription.objects.create(tenant=tenant, instrument=instrument, created_at=timezone.now()).id
    )


PATH_PARAM_FACTORIES: dict[str, Callable[[Tenant], str]] = {
    "account_id": _broker_account,
    "order_id": _order,
    "user_id": _user,
    "membership_id": _membership,
    "api_key_id": _api_key,
    "invitation_id": _invitation,
    "job_id": _allocator_job,
    "symbol": _position_symbol,
    "run_id": _reconciliation_run,
    "limit_id": _risk_limit,
    "override_id": _risk_override,
    "kill_switch_id": _kill_switch,
    "breaker_id": _breaker,
    "rule_id": _compliance_rule,
    "entry_id": _restricted_entry,
    "subscription_id": _marketdata_subscription,
}

BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/tenants/current/members/{membership_id}"): {"role": "VIEWER"},
    ("POST", "/brokers/accounts/{account_id}/grants"): {"user_id": str(uuid.uuid4())},
    ("POST", "/brokers/accounts/{account_id}/halt"): {"reason": "sweep"},
    ("PATCH", "/orders/{order_id}"): {"quantity": "2"},
}
HEADERS: dict[tuple[str, str], dict[str, str]] = {
    ("PATCH", "/orders/{order_id}"): {"If-Match": '"1"'},
}


def all_operations() -> list[tuple[str, str, Any]]:
    """(method, path under /api/v1, operation) for every operation of the API."""
    found = []
    for bound in api._get_bound_routers():
        for path, path_view in bound.path_operations.items():
            full = "/" + "/".join(part.strip("/") for part in (bound.prefix, path) if part.strip("/"))
            for operation in path_view.operations:
                found.extend((method, full, operation) for method in operation.methods)
    return found


def _path_params(path: str) -> list[str]:
    return re.findall(r"{(?:\w+:)?(\w+)}", path)


def _fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"{(?:\w+:)?(\w+)}", lambda match: values[match.group(1)], path)


def _role_lacking(scope: Any) -> Role | None:
    needed = {scope} if isinstance(scope, str) else set(scope)
    lacking = [role for role in Role if not scopes_for(role) & needed]
    return max(lacking, key=lambda role: ROLE_RANK[role]) if lacking else None


OPERATIONS = all_operations()


def test_routes_were_found():
    assert len(OPERATIONS) > 20


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, _ in OPERATIONS])
def test_every_route_declares_auth_or_is_listed_public(method, path):
    operation = next(op for m, p, op in OPERATIONS if (m, p) == (method, path))
    if (method, path) in PUBLIC_ROUTES:
        assert not operation.auth_callbacks, f"{method} {path} is listed public but has auth"
        return
    assert operation.auth_callbacks, f"{method} {path} has no auth: use scoped(...) or list it in PUBLIC_ROUTES"
    assert all(hasattr(callback, "required_scope") for callback in operation.auth_callbacks), (
        f"{method} {path}: declare auth with apps.tenants.auth.scoped()"
    )


@pytest.mark.parametrize(
    ("method", "path"), [(m, p) for m, p, op in OPERATIONS if op.auth_callbacks and (m, p) not in PUBLIC_ROUTES]
)
def test_every_route_refuses_no_credentials_and_missing_scope(method, path, tenant):
    operation = next(op for m, p, op in OPERATIONS if (m, p) == (method, path))
    url = _fill(path, {name: str(uuid.uuid4()) for name in _path_params(path)})
    body = BODIES.get((method, path), {}) if method in {"POST", "PUT", "PATCH"} else None
    anonymous = Api().request(method, url, body)
    assert anonymous.status_code == 401, f"{method} {path} without credentials: {anonymous.status_code}"
    assert anonymous.json_body["code"] == "AUTHENTICATION_FAILED"
    scope = operation.auth_callbacks[0].required_scope
    role = _role_lacking(scope) if scope else None
    if role is None:
        return
    member = make_member(tenant, role)
    refused = member.api.request(method, url, body)
    assert refused.status_code == 403, f"{method} {path} as {role} (lacks {scope}): {refused.status_code}"
    assert refused.json_body["code"] == "PERMISSION_DENIED"
    # An API key of an ADMIN without the scope is refused too.
    key_holder = make_member(tenant, Role.ADMIN)
    granted = sorted(scopes_for(Role.ADMIN) - ({scope} if isinstance(scope, str) else set(scope)))
    created = key_holder.api.post("/auth/api-keys", {"name": "sweep", "scopes": granted})
    keyed = Api({"X-API-Key": created.json_body["key"]}).request(method, url, body)
    assert keyed.status_code == 403, f"{method} {path} with a key lacking {scope}: {keyed.status_code}"


def _database_fingerprint() -> str:
    digest = hashlib.sha256()
    for model in django_apps.get_models():
        if not model.__module__.startswith("apps."):
            continue
        rows = model.objects.order_by("pk").values_list()
        digest.update(f"{model._meta.label}:{list(rows)!r}".encode())
    return digest.hexdigest()


TENANT_OBJECT_ROUTES = [(m, p) for m, p, op in OPERATIONS if _path_params(p) and (m, p) not in PUBLIC_ROUTES]


@pytest.mark.parametrize(("method", "path"), TENANT_OBJECT_ROUTES)
def test_another_tenants_object_is_404_and_nothing_changes(method, path, tenant, other_tenant):
    missing = [name for name in _path_params(path) if name not in PATH_PARAM_FACTORIES]
    assert not missing, f"register factories for path parameters {missing} in tests/test_sweeps.py"
    values = {name: PATH_PARAM_FACTORIES[name](other_tenant) for name in _path_params(path)}
    member = make_member(tenant, Role.ADMIN)
    before = _database_fingerprint()
    body = BODIES.get((method, path), {}) if method in {"POST", "PUT", "PATCH"} else None
    response = member.api.request(method, _fill(path, values), body, headers=HEADERS.get((method, path)))
    assert response.status_code == 404, f"{method} {path} with another tenant's ids: {response.status_code}"
    assert response.json_body["code"] == "NOT_FOUND"
    assert _database_fingerprint() == before, f"{method} {path} changed something for another tenant's ids"
