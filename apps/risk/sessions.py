"""Which calendar an account follows, and whether its session is open (for holding orders).

An account's own calendar (`AccountRisk.calendar`, set with PATCH /risk/accounts/{id}) wins;
otherwise its broker's default from config/risk_rules.yaml: the paper broker is ALWAYS_OPEN,
IB follows XNYS, except an IB account whose gateway is on this machine (a loopback host) or at
IBSIM_HOST:IBSIM_PORT outside production, which is the built-in simulator of `make run` and the
tests (`IB_SIMULATOR`, ALWAYS_OPEN by default) so that development trades at any hour. A real
gateway on this machine in development needs its calendar set explicitly.

`session_open` is what routing asks for every submission: the calendar name of an account is
cached in the process for a few seconds (it changes only by an explicit PATCH), the calendar's
answer per minute (`facts_at_minute`).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from uuid import UUID

from django.conf import settings

from apps.brokers.models import BrokerAccount
from apps.compliance.calendars import ALWAYS_OPEN, facts_at_minute
from apps.risk.config import defaults
from apps.risk.models import AccountRisk

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost", "0.0.0.0"})  # noqa: S104 - a name, not a bind
SIMULATOR = "IB_SIMULATOR"
CACHE_SECONDS = 5.0
_cache: dict[str, tuple[float, str]] = {}


def on_simulator(account: BrokerAccount) -> bool:
    """Whether an IB account points at the built-in simulator (a loopback gateway, never in production)."""
    if account.broker != "IB" or settings.ENVIRONMENT == "production":
        return False
    return account.host in LOOPBACK or (account.host, account.port) == (settings.IBSIM_HOST, settings.IBSIM_PORT)


def calendar_for(account: BrokerAccount, row: AccountRisk | None) -> str:
    """The calendar an account follows: its own setting, else the default of its broker."""
    if row is not None and row.calendar:
        return row.calendar
    calendars = defaults().calendars
    if on_simulator(account) and SIMULATOR in calendars:
        return calendars[SIMULATOR]
    return calendars.get(account.broker, ALWAYS_OPEN)


def calendar_of(account_id: Any, *, fresh: bool = False) -> str:
    """`calendar_for` by account id, cached for CACHE_SECONDS (ALWAYS_OPEN for an unknown account)."""
    key = str(account_id)
    hit = _cache.get(key)
    if hit is not None and not fresh and time.monotonic() - hit[0] < CACHE_SECONDS:
        return hit[1]
    account = BrokerAccount.objects.filter(id=UUID(key)).only("id", "broker", "host", "port").first()
    if account is None:
        return ALWAYS_OPEN
    name = calendar_for(account, AccountRisk.objects.filter(account_id=account.id).only("calendar").first())
    _cache[key] = (time.monotonic(), name)
    return name


def session_open(account_id: Any, now: datetime, *, fresh: bool = False) -> tuple[bool, datetime | None]:
    """Whether the account's market is in its regular session, and its next open when not."""
    name = calendar_of(account_id, fresh=fresh)
    if name == ALWAYS_OPEN:
        return True, None
    answer = facts_at_minute(name, now)
    return answer.is_open, answer.next_open


def forget(account_id: Any) -> None:
    """Drop the cached calendar of an account (its calendar setting changed in this process)."""
    _cache.pop(str(account_id), None)
