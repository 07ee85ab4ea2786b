"""Who may see and trade which broker account: one queryset method, used by every read and write.

ADMIN and MANAGER act on every account of their tenant. Everyone else acts only on the accounts
granted to them with django-guardian (`brokers.trade_brokeraccount`); an ungranted account does
not exist for them (404), exactly like another tenant's.
"""

from __future__ import annotations

from django.db.models import QuerySet
from guardian.shortcuts import get_objects_for_user

from apps.brokers.models import BrokerAccount
from apps.tenants.models import Tenant, User
from apps.tenants.scopes import Role

TRADE_PERMISSION = "brokers.trade_brokeraccount"
ALL_ACCOUNT_ROLES = frozenset({Role.ADMIN, Role.MANAGER})


def accounts_for(*, tenant: Tenant, user: User, role: Role | str) -> QuerySet[BrokerAccount]:
    """The tenant's broker accounts this member may see and trade."""
    accounts = BrokerAccount.objects.filter(tenant=tenant)
    if Role(role) in ALL_ACCOUNT_ROLES:
        return accounts
    return get_objects_for_user(user, TRADE_PERMISSION, klass=accounts, accept_global_perms=False)
