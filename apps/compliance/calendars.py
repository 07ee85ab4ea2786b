"""Market calendars from exchange_calendars: is the session open now, when does it open next,
today's regular session. No Django here; calendars are loaded once per process (they are slow
to build) and are thread-safe to read.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import exchange_calendars  # type: ignore[import-untyped]
import pandas as pd  # type: ignore[import-untyped]

from apps.compliance.rules import CalendarFacts, Session

ALWAYS_OPEN = "ALWAYS_OPEN"


@lru_cache(maxsize=16)
def _calendar(name: str) -> Any:
    return exchange_calendars.get_calendar(name)


def known(name: str) -> bool:
    """Whether `name` is ALWAYS_OPEN or an exchange_calendars calendar (XNYS, XTSE, …)."""
    return name == ALWAYS_OPEN or name in exchange_calendars.get_calendar_names()


def facts(name: str, now: datetime) -> CalendarFacts:
    """Whether `name` is in its regular session at `now`, and its next open when it is not."""
    if name == ALWAYS_OPEN:
        return CalendarFacts(calendar=name, is_open=True)
    calendar = _calendar(name)
    moment = pd.Timestamp(now.astimezone(UTC))
    if calendar.is_open_on_minute(moment, ignore_breaks=True):
        return CalendarFacts(calendar=name, is_open=True)
    next_open = calendar.next_open(moment).to_pydatetime().astimezone(UTC)
    return CalendarFacts(calendar=name, is_open=False, next_open=next_open)


def session(name: str, now: datetime) -> Session:
    """Today's regular session (its open and close in UTC), None bounds on a day without one."""
    if name == ALWAYS_OPEN:
        day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return Session(open_at=day, close_at=day + timedelta(days=1))
    calendar = _calendar(name)
    day = pd.Timestamp(now.astimezone(calendar.tz).date())
    if not calendar.is_session(day):
        return Session(open_at=None, close_at=None)
    return Session(
        open_at=calendar.session_open(day).to_pydatetime().astimezone(UTC),
        close_at=calendar.session_close(day).to_pydatetime().astimezone(UTC),
    )
