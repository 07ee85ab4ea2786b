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
# Market-on-close / limit-on-close orders are refused this long before the close (NYSE: 15:50 ET
# for a 16:00 close, 12:50 on an early close; Nasdaq: 15:50). Other calendars: the same default.
ON_CLOSE_CUTOFF = {"XNYS": timedelta(minutes=10), "XNAS": timedelta(minutes=10)}
DEFAULT_ON_CLOSE_CUTOFF = timedelta(minutes=10)


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
        close_at = calendar.next_close(moment).to_pydatetime().astimezone(UTC)
        cutoff = close_at - ON_CLOSE_CUTOFF.get(name, DEFAULT_ON_CLOSE_CUTOFF)
        return CalendarFacts(
            calendar=name, is_open=True, close_at=close_at, on_close_cutoff=cutoff, timezone=str(calendar.tz)
        )
    next_open = calendar.next_open(moment).to_pydatetime().astimezone(UTC)
    return CalendarFacts(calendar=name, is_open=False, next_open=next_open)


def facts_at_minute(name: str, now: datetime) -> CalendarFacts:
    """`facts` for the minute of `now`, cached: sessions open and close on whole minutes."""
    return _facts_minute(name, now.astimezone(UTC).replace(second=0, microsecond=0))


@lru_cache(maxsize=512)
def _facts_minute(name: str, minute: datetime) -> CalendarFacts:
    return facts(name, minute)


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


def previous_close(name: str, now: datetime) -> datetime | None:
    """The last session close at or before `now` (None for ALWAYS_OPEN: it never closes)."""
    if name == ALWAYS_OPEN:
        return None
    moment = pd.Timestamp(now.astimezone(UTC))
    return calendar_of(name).previous_close(moment).to_pydatetime().astimezone(UTC)  # type: ignore[no-any-return]


def calendar_of(name: str) -> Any:
    """The exchange_calendars calendar `name` (cached)."""
    return _calendar(name)
