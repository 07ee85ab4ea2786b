"""Simulated time and trading sessions.

The simulator never reads the wall clock for market time: it asks a `SimClock`, which runs at a
configurable multiple of real time (``speed`` 0 freezes it, so that tests move time only with
`advance`) and can be moved forward at will. Rate limits and acknowledgement delays, which are
about the client's real behaviour, use real time instead.

A `Schedule` says whether the market is open and when sessions close. `AlwaysOpen` (the default,
so `make run` and the tests trade at any hour) still closes a session at every midnight UTC, so
that MOC/LOC orders get a closing auction and DAY orders expire; `ExchangeSchedule` follows an
exchange's real calendar (holidays, early closes) through exchange_calendars.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol


class SimClock:
    """Simulated UTC time: ``start + (real elapsed × speed) + manual advances``."""

    def __init__(self, start: datetime | None = None, speed: float = 1.0) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self._lock = threading.Lock()
        self._base_sim = (start or datetime.now(UTC)).astimezone(UTC)
        self._base_real = time.monotonic()
        self._speed = speed

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> datetime:
        with self._lock:
            elapsed = (time.monotonic() - self._base_real) * self._speed
            return self._base_sim + timedelta(seconds=elapsed)

    def advance(self, seconds: float) -> datetime:
        """Move simulated time forward (never backward) and return the new time."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._base_sim += timedelta(seconds=seconds)
        return self.now()

    def set_speed(self, speed: float) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        now = self.now()
        with self._lock:
            self._base_sim = now
            self._base_real = time.monotonic()
            self._speed = speed


class Schedule(Protocol):
    """When the market trades."""

    def is_open(self, at: datetime) -> bool: ...

    def closes_between(self, start: datetime, end: datetime) -> list[datetime]:
        """Session closes in the half-open interval (start, end]."""
        ...


class AlwaysOpen:
    """Always trading; a session boundary (closing auction, DAY expiry) at every midnight UTC."""

    def is_open(self, at: datetime) -> bool:
        return True

    def closes_between(self, start: datetime, end: datetime) -> list[datetime]:
        closes = []
        day = datetime(start.year, start.month, start.day, tzinfo=UTC) + timedelta(days=1)
        while day <= end:
            closes.append(day)
            day += timedelta(days=1)
        return closes


class ExchangeSchedule:
    """Regular trading hours of one exchange (``XNYS`` by default), from exchange_calendars."""

    def __init__(self, name: str = "XNYS") -> None:
        # Imported here: building a calendar costs ~0.5 s, and AlwaysOpen users never need it.
        import exchange_calendars  # type: ignore[import-untyped]

        self.name = name
        self._calendar: Any = exchange_calendars.get_calendar(name)

    def is_open(self, at: datetime) -> bool:
        import pandas as pd  # type: ignore[import-untyped]

        minute = pd.Timestamp(at.astimezone(UTC)).floor("min")
        try:
            return bool(self._calendar.is_open_on_minute(minute, ignore_breaks=True))
        except ValueError:
            return False  # outside the calendar's bounds

    def closes_between(self, start: datetime, end: datetime) -> list[datetime]:
        first = start.astimezone(UTC).date()
        last = end.astimezone(UTC).date()
        try:
            sessions = self._calendar.sessions_in_range(first.isoformat(), last.isoformat())
        except ValueError:
            return []
        closes = []
        for session in sessions:
            close = self._calendar.session_close(session).to_pydatetime()
            if start < close <= end:
                closes.append(close)
        return closes
