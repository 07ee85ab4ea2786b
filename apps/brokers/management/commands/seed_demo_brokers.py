"""`manage.py seed_demo_brokers`: the demo tenant's broker accounts and the instrument universe.

Run after `seed_demo` (the Makefile's `run` does): an IB paper account `DU1000001` pointing at the
built-in IB Gateway simulator, a paper-broker account, and the simulator's instruments with
their IB conIds. Idempotent; development only.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.brokers.ibsim.catalogue import DEFAULT_INSTRUMENTS
from apps.brokers.models import AccountMode, Broker, BrokerAccount, ConnectionStatus
from apps.brokers.services import (
    Connection,
    InstrumentData,
    broker_account_connect,
    broker_account_create,
    instrument_upsert,
)
from apps.common.context import Actor
from apps.tenants.models import Tenant

DEMO_SLUG = "demo"
IB_ACCOUNT = "DU1000001"
PAPER_ACCOUNT = "PAPER0001"


def _asset_class(sec_type: str, stock_type: str) -> str:
    if sec_type == "CASH":
        return "FX"
    return "ETF" if stock_type == "ETF" else "STK"


class Command(BaseCommand):
    help = "Create the demo tenant's broker accounts and the instrument universe (development only; idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.ENVIRONMENT == "production":
            raise CommandError("seed_demo_brokers refuses to run with OMS_ENVIRONMENT=production")
        tenant = Tenant.objects.filter(slug=DEMO_SLUG).first()
        if tenant is None:
            raise CommandError("the demo tenant does not exist: run `manage.py seed_demo` first")
        actor = Actor.system("manage.py seed_demo_brokers")
        for listing in DEFAULT_INSTRUMENTS:
            instrument_upsert(
                actor=actor,
                data=InstrumentData(
                    symbol=listing.symbol,
                    exchange=listing.primary_exchange,
                    currency=listing.currency,
                    asset_class=_asset_class(listing.sec_type, listing.stock_type),
                    tick_size=listing.tick_size(listing.reference_price),
                    con_id=listing.con_id,
                    description=listing.long_name,
                ),
            )
        ib = self._account(
            tenant,
            actor,
            broker=Broker.IB,
            code=IB_ACCOUNT,
            connection=Connection(settings.IBSIM_HOST, settings.IBSIM_PORT, 1),
        )
        paper = self._account(tenant, actor, broker=Broker.PAPER, code=PAPER_ACCOUNT, connection=None)
        if paper.status != ConnectionStatus.CONNECTED:
            paper = broker_account_connect(tenant=tenant, actor=actor, account_id=paper.id)
        self.stdout.write(
            f"{len(DEFAULT_INSTRUMENTS)} instruments; accounts {ib.account_code} (IB simulator at "
            f"{ib.host}:{ib.port}, {ib.status}) and {paper.account_code} (paper broker, {paper.status})"
        )

    def _account(
        self, tenant: Tenant, actor: Actor, *, broker: Broker, code: str, connection: Connection | None
    ) -> BrokerAccount:
        existing = BrokerAccount.objects.filter(tenant=tenant, broker=broker, account_code=code).first()
        if existing is not None:
            return existing
        return broker_account_create(
            tenant=tenant, actor=actor, broker=broker, account_code=code, mode=AccountMode.PAPER, connection=connection
        )
