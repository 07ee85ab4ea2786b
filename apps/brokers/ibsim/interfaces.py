"""The seams of the simulated broker: the requests it takes, the errors it raises, what it says.

`PlaceRequest` is a decoded placeOrder; `OrderRejected` carries the IB error code a request is
answered with; `Notifier` is what the broker says, implemented by the server, which routes each
announcement to the right sessions. Also IB's time format, which ib_async parses strictly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo

from apps.brokers import matching
from apps.brokers.ibsim.catalogue import ContractQuery
from apps.brokers.ibsim.state import SimExecution, SimOrder


class Notifier(Protocol):
    """What the broker says; the server implements it (and routes it to the right sessions)."""

    def order_changed(self, order: SimOrder, *, open_order: bool = True) -> None: ...

    def order_error(self, client_id: int, order_id: int, code: int, message: str) -> None: ...

    def execution(self, order: SimOrder, execution: SimExecution) -> None: ...

    def commission(self, order: SimOrder, execution: SimExecution) -> None: ...

    def what_if(self, order: SimOrder, margins: dict[str, str], commission: Decimal) -> None: ...

    def portfolio_changed(self, account: str, con_id: int) -> None: ...

    def quote_changed(self, con_id: int, quote: matching.Quote) -> None: ...


@dataclass(frozen=True, slots=True)
class PlaceRequest:
    """The parts of a placeOrder message the simulator acts on."""

    order_id: int
    contract: ContractQuery
    action: str
    quantity: Decimal
    order_type: str
    limit_price: Decimal | None = None
    aux_price: Decimal | None = None
    tif: str = "DAY"
    oca_group: str = ""
    oca_type: int = 0
    account: str = ""
    order_ref: str = ""
    transmit: bool = True
    parent_id: int = 0
    outside_rth: bool = False
    good_after_time: str = ""
    good_till_date: str = ""
    trailing_percent: Decimal | None = None
    trail_stop_price: Decimal | None = None
    what_if: bool = False


@lru_cache(maxsize=1024)
def ib_time(at: datetime) -> str:
    """IB's ``yyyymmdd hh:mm:ss <zone>`` format; ib_async needs an IANA zone name.

    Cached: every execution message carries its time, and bursts of fills share their second.
    """
    return at.astimezone(UTC).strftime("%Y%m%d %H:%M:%S") + " UTC"


def parse_ib_time(text: str) -> datetime | None:
    """Parse a goodTillDate such as ``20250310 16:00:00 US/Eastern`` (UTC when no zone is given)."""
    text = text.strip()
    if not text:
        return None
    date_part, _, rest = text.partition(" ")
    time_part, _, zone = rest.strip().partition(" ")
    naive = datetime.strptime(date_part + (time_part or "23:59:59") + "+0000", "%Y%m%d%H:%M:%S%z")
    # The wall-clock time is in `zone` (IB's convention), not UTC: re-label before converting.
    return naive.replace(tzinfo=ZoneInfo(zone) if zone else UTC).astimezone(UTC)


class OrderRejected(Exception):
    """An order request IB would answer with an error instead of accepting it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
