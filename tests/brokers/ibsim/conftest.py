"""Fixtures: ``ibsim`` (a started simulator, strict, frozen clock) and ``ib`` (a connected client).

Options for one test go through the ``ibsim`` marker, e.g. ``@pytest.mark.ibsim(market_data_lines=3)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from apps.brokers.ibsim import IBSimulator
from apps.brokers.ibsim.testing import connect, simulator_session


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ibsim(**options): options of the ibsim fixture's simulator")


@pytest.fixture
def ibsim(request: pytest.FixtureRequest) -> Iterator[IBSimulator]:
    marker = request.node.get_closest_marker("ibsim")
    options: dict[str, Any] = dict(marker.kwargs) if marker else {}
    with simulator_session(**options) as simulator:
        yield simulator


@pytest.fixture
def ib(ibsim: IBSimulator) -> Iterator[Any]:
    client = connect(ibsim, client_id=1)
    yield client
    client.disconnect()
