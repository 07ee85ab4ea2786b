"""`manage.py seed_demo_risk`: the demo accounts trade at any hour (development only; idempotent).

The demo IB account points at the built-in simulator, whose session is always open by default;
without this it would follow the XNYS calendar of real IB accounts and `make run` would hold
orders outside US market hours.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.brokers.models import BrokerAccount
from apps.common.context import Actor
from apps.compliance.calendars import ALWAYS_OPEN
from apps.risk.services.limits import account_risk_update

DEMO_TENANT = "demo"


class Command(BaseCommand):
    help = "Let the demo tenant's accounts follow an always-open calendar (development only)."

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.ENVIRONMENT == "production":
            raise CommandError("seed_demo_risk refuses to run with OMS_ENVIRONMENT=production")
        accounts = list(BrokerAccount.objects.filter(tenant__slug=DEMO_TENANT).select_related("tenant"))
        for account in accounts:
            account_risk_update(
                tenant=account.tenant,
                actor=Actor.system("manage.py seed_demo_risk"),
                account_id=account.id,
                changes={"calendar": ALWAYS_OPEN},
            )
        self.stdout.write(f"demo accounts on the {ALWAYS_OPEN} calendar: {len(accounts)}")
