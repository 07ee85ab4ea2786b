"""Fixtures of the market data tests: instruments the simulator knows, the simulator, the gateway."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from apps.brokers.ibsim import IBSimulator
from apps.brokers.ibsim.testing import simulator_session
from apps.brokers.models import Instrument
from apps.brokers.services import InstrumentData, instrument_upsert
from apps.common.context import Actor
from tests.brokers.ib.conftest import CODE, run_gateway  # noqa: F401 (the gateway-in-a-thread fixture)

SYSTEM = Actor.system("test")
CON_IDS = {"AAPL": 265598, "MSFT": 272093, "AMZN": 3691937, "GOOGL": 208813719}


@pytest.fixture
def instruments(db: object) -> dict[str, Instrument]:
    return {
        symbol: instrument_upsert(
            data=InstrumentData(symbol, "NASDAQ", "USD", "STK", Decimal("0.01"), con_id=con_id), actor=SYSTEM
        )
        for symbol, con_id in CON_IDS.items()
    }


@pytest.fixture
def start_sim() -> Iterator[Callable[..., IBSimulator]]:
    """Start the IB simulator (over TCP, the log guard on) with options, e.g. `market_data_lines=2`."""
    with contextlib.ExitStack() as stack:

        def start(**options: Any) -> IBSimulator:
            return stack.enter_context(simulator_session(accounts=(CODE, "DU1000002"), **options))

        yield start
