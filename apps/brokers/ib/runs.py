"""Reconciliation runs for the API: request one (the gateway carries it out), list and read them.

Runs are tenant rows; a member sees the runs of the accounts they may see (`accounts_for`).
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from apps.audit.services import audit_record
from apps.brokers.ib.models import ReconciliationRun, RunStatus, RunTrigger
from apps.brokers.models import Broker, BrokerAccount, ConnectionStatus
from apps.brokers.permissions import accounts_for
from apps.common.context import Actor
from apps.common.errors import NotFound, StateConflict
from apps.tenants.models import Tenant, User
from apps.tenants.scopes import Role


def reconciliation_run_list(
    *, tenant: Tenant, user: User, role: Role | str, account_id: UUID | None = None
) -> QuerySet[ReconciliationRun]:
    """The tenant's runs on accounts this member may see, newest first."""
    accounts = accounts_for(tenant=tenant, user=user, role=role)
    runs = ReconciliationRun.objects.filter(tenant=tenant, account__in=accounts)
    if account_id is not None:
        runs = runs.filter(account_id=account_id)
    return runs.select_related("account")


def reconciliation_run_get(*, tenant: Tenant, user: User, role: Role | str, run_id: UUID) -> ReconciliationRun:
    """One run with its drifts; another tenant's (or an unseen account's) is NotFound."""
    try:
        return reconciliation_run_list(tenant=tenant, user=user, role=role).prefetch_related("drifts").get(id=run_id)
    except ReconciliationRun.DoesNotExist as exc:
        raise NotFound(f"Reconciliation run {run_id} not found") from exc


@transaction.atomic(durable=True)
def reconciliation_request(
    *, tenant: Tenant, actor: Actor, user: User, role: Role | str, account_id: UUID
) -> ReconciliationRun:
    """Ask the account's gateway for a reconciliation now (it claims REQUESTED runs within a second)."""
    try:
        account = accounts_for(tenant=tenant, user=user, role=role).select_for_update().get(id=account_id)
    except BrokerAccount.DoesNotExist as exc:
        raise NotFound(f"Broker account {account_id} not found") from exc
    if account.broker != Broker.IB:
        raise StateConflict(
            f"Broker account {account.account_code} is a {account.broker} account; only IB accounts reconcile",
            details={"broker": account.broker},
        )
    run = ReconciliationRun.objects.create(
        tenant=tenant, account=account, trigger=RunTrigger.MANUAL, status=RunStatus.REQUESTED, requested_by=actor.label
    )
    audit_record(
        tenant_id=tenant.id,
        actor=actor,
        action="reconciliation.request",
        resource_type="reconciliation_run",
        resource_id=run.id,
        after={"account_id": str(account.id), "trigger": run.trigger},
    )
    return run


def gateway_heartbeat_check() -> dict[str, object]:
    """Readiness: every IB account a gateway serves has a heartbeat younger than the stale limit.

    An account counts as served once a gateway has reported a heartbeat for it, unless an
    operator disconnected it. A killed gateway leaves its account CONNECTED with an ageing
    heartbeat, which is exactly what this catches.
    """
    stale_after = settings.HEALTH_GATEWAY_STALE_SECONDS
    cutoff: datetime = timezone.now() - timezone.timedelta(seconds=stale_after)
    served = BrokerAccount.objects.filter(broker=Broker.IB, last_heartbeat_at__isnull=False).exclude(
        status=ConnectionStatus.DISCONNECTED, connect_requested=False, status_reason="disconnect requested"
    )
    stale = sorted(served.filter(last_heartbeat_at__lt=cutoff).values_list("account_code", flat=True))
    if stale:
        return {"ok": False, "error": f"gateway heartbeat older than {stale_after} s for {', '.join(stale)}"}
    return {"ok": True, "accounts": served.count()}
