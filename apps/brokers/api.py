"""Routers of broker accounts (`/brokers`) and instruments (`/instruments`)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.http import HttpRequest
from ninja import Query, Router, Status

from apps.brokers import selectors, services
from apps.brokers.ib import runs
from apps.brokers.ib.api import RunOut, run_out
from apps.brokers.models import AccountMode, Broker, BrokerAccount, Instrument
from apps.brokers.schemas import (
    AccountListQuery,
    BrokerAccountIn,
    BrokerAccountOut,
    GrantIn,
    GrantOut,
    HaltIn,
    InstrumentOut,
    InstrumentQuery,
)
from apps.common.pagination import paginate, parse_fields, select_fields
from apps.common.schemas import Page
from apps.tenants.auth import scoped
from apps.tenants.principal import principal_of, viewer_kwargs

brokers_router = Router(tags=["brokers"])
instruments_router = Router(tags=["instruments"])


def account_out(account: BrokerAccount) -> dict[str, Any]:
    connection = {"host": account.host, "port": account.port, "client_id": account.client_id} if account.host else None
    return {
        "id": account.id,
        "broker": account.broker,
        "account_code": account.account_code,
        "mode": account.mode,
        "base_currency": account.base_currency,
        "connection": connection,
        "status": account.status,
        "status_reason": account.status_reason,
        "connect_requested": account.connect_requested,
        "halted": account.halted,
        "last_heartbeat_at": account.last_heartbeat_at,
        "has_credentials": bool(account.credentials_encrypted),
        "created_at": account.created_at,
        "updated_at": account.updated_at,
    }


def instrument_out(instrument: Instrument) -> dict[str, Any]:
    return InstrumentOut(
        id=instrument.id,
        symbol=instrument.symbol,
        exchange=instrument.exchange,
        currency=instrument.currency,
        asset_class=instrument.asset_class,
        description=instrument.description,
        tick_size=instrument.tick_size.normalize(),
        lot_size=instrument.lot_size.normalize(),
        multiplier=instrument.multiplier.normalize(),
        broker_ref=str(instrument.con_id) if instrument.con_id is not None else None,
        con_id=instrument.con_id,
    ).model_dump(mode="json")


@brokers_router.get("/accounts", response=Page[BrokerAccountOut], auth=scoped("brokers:view"))
def list_broker_accounts(request: HttpRequest, query: Query[AccountListQuery]) -> dict[str, Any]:
    accounts = selectors.broker_account_list(**viewer_kwargs(request))
    if query.broker:
        accounts = accounts.filter(broker=query.broker)
    if query.status:
        accounts = accounts.filter(status=query.status)
    rows, next_cursor = paginate(accounts, limit=query.limit, cursor=query.cursor)
    return {"items": [account_out(row) for row in rows], "next": next_cursor}


@brokers_router.post("/accounts", response={201: BrokerAccountOut}, auth=scoped("brokers:connect"))
def create_broker_account(request: HttpRequest, payload: BrokerAccountIn) -> Status:
    principal = principal_of(request)
    connection = payload.connection
    account = services.broker_account_create(
        tenant=principal.tenant,
        actor=principal.actor,
        broker=Broker(payload.broker),
        account_code=payload.account_code,
        mode=AccountMode(payload.mode),
        base_currency=payload.base_currency,
        connection=services.Connection(connection.host, connection.port, connection.client_id) if connection else None,
        credentials=payload.credentials,
    )
    return Status(201, account_out(account))


@brokers_router.get("/accounts/{account_id}", response=BrokerAccountOut, auth=scoped("brokers:view"))
def get_broker_account(request: HttpRequest, account_id: UUID) -> dict[str, Any]:
    return account_out(selectors.broker_account_get(**viewer_kwargs(request), account_id=account_id))


@brokers_router.post("/accounts/{account_id}/connect", response=BrokerAccountOut, auth=scoped("brokers:connect"))
def connect_broker_account(request: HttpRequest, account_id: UUID) -> dict[str, Any]:
    principal = principal_of(request)
    account = services.broker_account_connect(tenant=principal.tenant, actor=principal.actor, account_id=account_id)
    return account_out(account)


@brokers_router.post("/accounts/{account_id}/disconnect", response=BrokerAccountOut, auth=scoped("brokers:connect"))
def disconnect_broker_account(request: HttpRequest, account_id: UUID) -> dict[str, Any]:
    principal = principal_of(request)
    account = services.broker_account_disconnect(tenant=principal.tenant, actor=principal.actor, account_id=account_id)
    return account_out(account)


@brokers_router.post("/accounts/{account_id}/halt", response=BrokerAccountOut, auth=scoped("brokers:connect"))
def halt_broker_account(request: HttpRequest, account_id: UUID, payload: HaltIn) -> dict[str, Any]:
    principal = principal_of(request)
    account = services.broker_account_halt(
        tenant=principal.tenant, actor=principal.actor, account_id=account_id, reason=payload.reason
    )
    return account_out(account)


@brokers_router.post("/accounts/{account_id}/resume", response=BrokerAccountOut, auth=scoped("brokers:connect"))
def resume_broker_account(request: HttpRequest, account_id: UUID) -> dict[str, Any]:
    principal = principal_of(request)
    account = services.broker_account_resume(tenant=principal.tenant, actor=principal.actor, account_id=account_id)
    return account_out(account)


@brokers_router.post("/accounts/{account_id}/reconcile", response={202: RunOut}, auth=scoped("brokers:connect"))
def reconcile_broker_account(request: HttpRequest, account_id: UUID) -> Status:
    principal = principal_of(request)
    run = runs.reconciliation_request(**viewer_kwargs(request), actor=principal.actor, account_id=account_id)
    return Status(202, run_out(run))


@brokers_router.get("/accounts/{account_id}/grants", response=list[GrantOut], auth=scoped("tenants:manage"))
def list_broker_account_grants(request: HttpRequest, account_id: UUID) -> list[dict[str, Any]]:
    account = selectors.broker_account_get(**viewer_kwargs(request), account_id=account_id)
    return [{"user_id": user.id, "email": user.email} for user in selectors.broker_account_grantees(account=account)]


@brokers_router.post("/accounts/{account_id}/grants", response={201: GrantOut}, auth=scoped("tenants:manage"))
def grant_broker_account(request: HttpRequest, account_id: UUID, payload: GrantIn) -> Status:
    principal = principal_of(request)
    user = services.broker_account_grant(
        tenant=principal.tenant, actor=principal.actor, account_id=account_id, user_id=payload.user_id
    )
    return Status(201, {"user_id": user.id, "email": user.email})


@brokers_router.delete("/accounts/{account_id}/grants/{user_id}", response={204: None}, auth=scoped("tenants:manage"))
def revoke_broker_account(request: HttpRequest, account_id: UUID, user_id: UUID) -> Status:
    principal = principal_of(request)
    services.broker_account_revoke(
        tenant=principal.tenant, actor=principal.actor, account_id=account_id, user_id=user_id
    )
    return Status(204, None)


@instruments_router.get("", response=Page[dict[str, Any]], auth=scoped("brokers:view"))
def list_instruments(request: HttpRequest, query: Query[InstrumentQuery]) -> dict[str, Any]:
    fields = parse_fields(query.fields, InstrumentOut.model_fields)
    instruments = selectors.instrument_list(symbol=query.symbol, asset_class=query.asset_class)
    rows, next_cursor = paginate(instruments, limit=query.limit, cursor=query.cursor)
    return {"items": select_fields((instrument_out(row) for row in rows), fields), "next": next_cursor}
