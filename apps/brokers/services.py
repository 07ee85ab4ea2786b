"""Write use cases of broker accounts: create, connect, disconnect, status reports, trading grants.

Each is one transaction that writes the change, its outbox event and its audit row (last).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from apps.audit.services import audit_record
from apps.brokers.models import AccountMode, Broker, BrokerAccount, ConnectionStatus, Instrument
from apps.brokers.permissions import TRADE_PERMISSION
from apps.common import crypto
from apps.common.context import Actor
from apps.common.errors import NotFound, StateConflict, ValidationFailed
from apps.events.services import outbox_emit
from apps.tenants.models import Membership, Tenant, User

STREAM = "ev.brokers"
STATUS_EVENTS = {
    ConnectionStatus.CONNECTED: "broker.reconnected",
    ConnectionStatus.DISCONNECTED: "broker.disconnected",
    ConnectionStatus.RECONNECTING: "broker.reconnecting",
    ConnectionStatus.HALTED: "broker.halted",
}


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the account's gateway listens (IB accounts only)."""

    host: str
    port: int
    client_id: int


def account_snapshot(account: BrokerAccount) -> dict[str, Any]:
    """The audited view of an account: never the credentials, only whether there are any."""
    return {
        "broker": account.broker,
        "account_code": account.account_code,
        "mode": account.mode,
        "host": account.host,
        "port": account.port,
        "client_id": account.client_id,
        "status": account.status,
        "connect_requested": account.connect_requested,
        "halted": account.halted,
        "has_credentials": bool(account.credentials_encrypted),
    }


def _emit_status(account: BrokerAccount) -> None:
    outbox_emit(
        tenant_id=account.tenant_id,
        stream=STREAM,
        kind=STATUS_EVENTS[ConnectionStatus(account.status)],
        aggregate_type="broker_account",
        aggregate_id=account.id,
        payload={
            "account_id": str(account.id),
            "account_code": account.account_code,
            "status": account.status,
            "reason": account.status_reason,
        },
    )


@transaction.atomic(durable=True)
def broker_account_create(
    *,
    tenant: Tenant,
    actor: Actor,
    broker: Broker,
    account_code: str,
    mode: AccountMode,
    base_currency: str = "USD",
    connection: Connection | None = None,
    credentials: dict[str, str] | None = None,
) -> BrokerAccount:
    """Register a broker account; its credentials are encrypted before they touch the database."""
    if broker == Broker.IB and connection is None:
        raise ValidationFailed(
            "IB accounts need connection settings", fields={"connection": ["required for broker IB"]}
        )
    if broker == Broker.PAPER and mode != AccountMode.PAPER:
        raise ValidationFailed("A paper-broker account is always PAPER", fields={"mode": ["must be PAPER"]})
    account = BrokerAccount(
        tenant=tenant,
        broker=broker,
        account_code=account_code,
        mode=mode,
        base_currency=base_currency.upper(),
        host=connection.host if connection else "",
        port=connection.port if connection else None,
        client_id=connection.client_id if connection else None,
        credentials_encrypted=crypto.encrypt(_credentials_text(credentials)) if credentials else "",
    )
    try:
        with transaction.atomic():
            account.save(force_insert=True)
    except IntegrityError as exc:
        raise StateConflict(
            f"Broker account {broker}:{account_code} already exists in this tenant",
            details={"broker": broker, "account_code": account_code},
        ) from exc
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="broker_account.create",
        resource_type="broker_account",
        resource_id=account.id,
        after=account_snapshot(account),
    )
    return account


def _credentials_text(credentials: dict[str, str]) -> str:
    # Stored as sorted "key=value" lines inside the ciphertext; decrypt with crypto.decrypt.
    return "\n".join(f"{key}={value}" for key, value in sorted(credentials.items()))


# FOR NO KEY UPDATE, not FOR UPDATE: status writes change no key, and FOR UPDATE would also block
# every concurrent insert of a row referencing the account (its foreign-key check takes KEY SHARE).
# A transaction that had already appended its audit row and then inserted such a row deadlocked
# with a status report waiting for the tenant's audit chain head.
def _lock_account(*, tenant: Tenant, account_id: UUID) -> BrokerAccount:
    try:
        return BrokerAccount.objects.select_for_update(no_key=True).get(tenant=tenant, id=account_id)
    except BrokerAccount.DoesNotExist as exc:
        raise NotFound(f"Broker account {account_id} not found") from exc


def _set_status(
    account: BrokerAccount, *, actor: Actor, action: str, status: ConnectionStatus, reason: str, requested: bool
) -> BrokerAccount:
    before = account_snapshot(account)
    changed = account.status != status
    account.status = status
    account.status_reason = reason[:255]
    account.connect_requested = requested
    if status == ConnectionStatus.CONNECTED:
        account.last_heartbeat_at = timezone.now()
    account.save(
        update_fields=["status", "status_reason", "connect_requested", "halted", "last_heartbeat_at", "updated_at"]
    )
    if changed:
        _emit_status(account)
    audit_record(
        tenant_id=account.tenant_id,
        actor=actor,
        action=action,
        resource_type="broker_account",
        resource_id=account.id,
        before=before,
        after=account_snapshot(account),
    )
    return account


@transaction.atomic(durable=True)
def broker_account_connect(*, tenant: Tenant, actor: Actor, account_id: UUID) -> BrokerAccount:
    """Ask for the account to be connected: a paper account is at once; IB waits for its gateway."""
    account = _lock_account(tenant=tenant, account_id=account_id)
    if account.status == ConnectionStatus.HALTED:
        then = "resume it before connecting" if account.halted else "its gateway probes IB again by itself"
        raise StateConflict(
            f"Broker account {account.account_code} is HALTED; {then}",
            details={"status": account.status, "reason": account.status_reason},
        )
    # The IB gateway process reads `connect_requested` and reports CONNECTED once IB answers.
    status = ConnectionStatus.CONNECTED if account.broker == Broker.PAPER else ConnectionStatus.RECONNECTING
    return _set_status(
        account, actor=actor, action="broker_account.connect", status=status, reason="connect requested", requested=True
    )


@transaction.atomic(durable=True)
def broker_account_disconnect(*, tenant: Tenant, actor: Actor, account_id: UUID) -> BrokerAccount:
    """Disconnect the account; orders routed to it wait until it is connected again."""
    account = _lock_account(tenant=tenant, account_id=account_id)
    status = ConnectionStatus.HALTED if account.status == ConnectionStatus.HALTED else ConnectionStatus.DISCONNECTED
    return _set_status(
        account,
        actor=actor,
        action="broker_account.disconnect",
        status=status,
        reason="disconnect requested" if status == ConnectionStatus.DISCONNECTED else account.status_reason,
        requested=False,
    )


@transaction.atomic(durable=True)
def broker_account_status_report(
    *, account_id: UUID, status: ConnectionStatus, reason: str = "", actor: Actor | None = None
) -> BrokerAccount:
    """Record what a connector observed (connected, reconnecting, halted …) and refresh the heartbeat.

    An operator's halt outranks the connector: the account stays HALTED until it is resumed.
    """
    try:
        account = BrokerAccount.objects.select_for_update(no_key=True).get(id=account_id)
    except BrokerAccount.DoesNotExist as exc:
        raise NotFound(f"Broker account {account_id} not found") from exc
    if account.halted:
        return account
    return _set_status(
        account,
        actor=actor or Actor.system("broker connector"),
        action="broker_account.status",
        status=status,
        reason=reason,
        requested=account.connect_requested,
    )


def broker_account_heartbeat(*, account_id: UUID) -> bool:
    """Refresh the heartbeat of a connected account (no audit: it is not a change of state);
    False when the account is not CONNECTED (halted, or just resumed)."""
    updated = BrokerAccount.objects.filter(id=account_id, status=ConnectionStatus.CONNECTED).update(
        last_heartbeat_at=timezone.now()
    )
    return bool(updated)


@transaction.atomic(durable=True)
def broker_account_halt(*, tenant: Tenant, actor: Actor, account_id: UUID, reason: str) -> BrokerAccount:
    """An operator's halt: the account turns HALTED (new orders are refused) until resumed.

    The gateway stays connected (cancels and reconciliation still work) but its status reports no
    longer change the account. Halting a halted account again only replaces the reason.
    """
    account = _lock_account(tenant=tenant, account_id=account_id)
    account.halted = True
    return _set_status(
        account,
        actor=actor,
        action="broker_account.halt",
        status=ConnectionStatus.HALTED,
        reason=f"halted by operator: {reason}",
        requested=account.connect_requested,
    )


@transaction.atomic(durable=True)
def broker_account_resume(*, tenant: Tenant, actor: Actor, account_id: UUID) -> BrokerAccount:
    """Clear an operator's halt. A paper account is CONNECTED at once; an IB account is
    RECONNECTING until its gateway's next heartbeat reports it connected."""
    account = _lock_account(tenant=tenant, account_id=account_id)
    if not account.halted:
        raise StateConflict(
            f"Broker account {account.account_code} is not halted by an operator",
            details={"status": account.status, "reason": account.status_reason},
        )
    account.halted = False
    status = ConnectionStatus.CONNECTED if account.broker == Broker.PAPER else ConnectionStatus.RECONNECTING
    return _set_status(
        account,
        actor=actor,
        action="broker_account.resume",
        status=status,
        reason="halt cleared by operator",
        requested=account.connect_requested,
    )


def _member(*, tenant: Tenant, user_id: UUID) -> User:
    membership = Membership.objects.select_related("user").filter(tenant=tenant, user_id=user_id).first()
    if membership is None:
        raise NotFound(f"Member {user_id} not found")
    return membership.user


@transaction.atomic(durable=True)
def broker_account_grant(*, tenant: Tenant, actor: Actor, account_id: UUID, user_id: UUID) -> User:
    """Let a member trade (and see) the account; idempotent."""
    account = _lock_account(tenant=tenant, account_id=account_id)
    user = _member(tenant=tenant, user_id=user_id)
    assign_perm(TRADE_PERMISSION, user, account)
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="broker_account.grant",
        resource_type="broker_account",
        resource_id=account.id,
        after={"user_id": str(user.id), "permission": TRADE_PERMISSION},
    )
    return user


@transaction.atomic(durable=True)
def broker_account_revoke(*, tenant: Tenant, actor: Actor, account_id: UUID, user_id: UUID) -> None:
    """Withdraw a member's trading grant on the account; idempotent."""
    account = _lock_account(tenant=tenant, account_id=account_id)
    user = _member(tenant=tenant, user_id=user_id)
    remove_perm(TRADE_PERMISSION, user, account)
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="broker_account.revoke",
        resource_type="broker_account",
        resource_id=account.id,
        before={"user_id": str(user.id), "permission": TRADE_PERMISSION},
    )


@dataclass(frozen=True, slots=True)
class InstrumentData:
    """Reference data of one listing, as a contract master (or the seed) describes it."""

    symbol: str
    exchange: str
    currency: str
    asset_class: str
    tick_size: Decimal
    lot_size: Decimal = Decimal(1)
    con_id: int | None = None
    description: str = ""


@transaction.atomic
def instrument_upsert(*, data: InstrumentData, actor: Actor) -> Instrument:
    """Create or refresh an instrument, keyed on IB's conId (or symbol, exchange and currency)."""
    key: dict[str, Any] = (
        {"con_id": data.con_id}
        if data.con_id is not None
        else {"symbol": data.symbol, "exchange": data.exchange, "currency": data.currency}
    )
    instrument, created = Instrument.objects.update_or_create(
        **key,
        defaults={
            "symbol": data.symbol,
            "exchange": data.exchange,
            "currency": data.currency,
            "asset_class": data.asset_class,
            "tick_size": data.tick_size,
            "lot_size": data.lot_size,
            "description": data.description,
            "active": True,
        },
    )
    audit_record(
        tenant_id=None,
        actor=actor,
        action="instrument.create" if created else "instrument.update",
        resource_type="instrument",
        resource_id=instrument.id,
        after={"symbol": data.symbol, "exchange": data.exchange, "currency": data.currency, "con_id": data.con_id},
    )
    return instrument
