"""Reads of broker accounts (scoped to what the member may see) and of the instrument universe."""

from __future__ import annotations

from uuid import UUID

from django.db.models import QuerySet
from guardian.shortcuts import get_users_with_perms

from apps.brokers.models import BrokerAccount, Instrument
from apps.brokers.permissions import TRADE_PERMISSION, accounts_for
from apps.common.errors import NotFound
from apps.tenants.models import Tenant, User
from apps.tenants.scopes import Role


def broker_account_list(*, tenant: Tenant, user: User, role: Role | str) -> QuerySet[BrokerAccount]:
    """The accounts of `tenant` this member may see (all for admins and managers, else granted ones)."""
    return accounts_for(tenant=tenant, user=user, role=role)


def broker_account_get(*, tenant: Tenant, user: User, role: Role | str, account_id: UUID) -> BrokerAccount:
    """Return one visible account; another tenant's or an ungranted one is NotFound."""
    try:
        return broker_account_list(tenant=tenant, user=user, role=role).get(id=account_id)
    except BrokerAccount.DoesNotExist as exc:
        raise NotFound(f"Broker account {account_id} not found") from exc


def broker_account_grantees(*, account: BrokerAccount) -> QuerySet[User]:
    """The users holding a trading grant on `account` who are still members of its tenant."""
    users = get_users_with_perms(account, only_with_perms_in=[TRADE_PERMISSION.split(".")[1]], with_superusers=False)
    return users.filter(memberships__tenant_id=account.tenant_id).order_by("email")


def instrument_list(*, symbol: str | None = None, asset_class: str | None = None) -> QuerySet[Instrument]:
    """Active instruments, optionally filtered (symbol case-insensitively)."""
    instruments = Instrument.objects.filter(active=True)
    if symbol:
        instruments = instruments.filter(symbol__iexact=symbol)
    if asset_class:
        instruments = instruments.filter(asset_class=asset_class)
    return instruments
