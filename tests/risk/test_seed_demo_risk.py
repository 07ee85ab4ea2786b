"""`make run`'s demo accounts trade at any hour (the simulator is always open)."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from apps.brokers.models import BrokerAccount
from apps.risk.models import AccountRisk

pytestmark = pytest.mark.django_db


def test_demo_accounts_follow_the_always_open_calendar():
    call_command("seed_demo")
    call_command("seed_demo_brokers")
    call_command("seed_demo_risk")
    call_command("seed_demo_risk")
    ib_account = BrokerAccount.objects.get(account_code="DU1000001")
    assert AccountRisk.objects.get(account=ib_account).calendar == "ALWAYS_OPEN"
    assert (
        AccountRisk.objects.filter(tenant__slug="demo").count()
        == BrokerAccount.objects.filter(tenant__slug="demo").count()
    )
