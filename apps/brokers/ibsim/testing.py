"""Test helpers: a simulator on a free loopback port, a guard on ib_async's logs, a client factory.

`simulator_session` is the body of the ``ibsim`` pytest fixture (tests/brokers/ibsim/conftest.py)
as a plain context manager, so that end-to-end tests elsewhere can reuse it:

    with simulator_session() as sim:
        ib = connect(sim, client_id=1)

It fails (AssertionError) when the simulator saw a protocol error or an unknown message id, or
when ib_async logged that it could not decode a message: ib_async's decoder swallows malformed
messages, so without this guard a field-order mistake only shows up as missing data.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from apps.brokers.ibsim.simulator import IBSimulator, SimConfig

FIXED_START = datetime(2025, 3, 10, 14, 30, tzinfo=UTC)
"""Monday 10 March 2025, 10:30 in New York: a regular trading session."""

# ib_async log lines that mean a message from the simulator was dropped or misrouted.
_SUSPICIOUS = ("No order found", "Unknown reqId", "Error handling fields", "Error for ")


class IbAsyncLogGuard(logging.Handler):
    """Collects ib_async log records that reveal a malformed or unexpected message."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.problems: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        decoder = record.name == "ib_async.Decoder" and record.levelno >= logging.ERROR
        if decoder or record.exc_info or any(text in message for text in _SUSPICIOUS):
            self.problems.append(f"{record.name}: {message}")


@contextmanager
def ib_async_log_guard() -> Iterator[IbAsyncLogGuard]:
    """Attach an `IbAsyncLogGuard` to the 'ib_async' loggers for the duration of the block."""
    guard = IbAsyncLogGuard()
    logger = logging.getLogger("ib_async")
    previous = logger.level
    if logger.getEffectiveLevel() > logging.ERROR:
        logger.setLevel(logging.ERROR)
    logger.addHandler(guard)
    try:
        yield guard
    finally:
        logger.removeHandler(guard)
        logger.setLevel(previous)


@contextmanager
def running_simulator(**overrides: Any) -> Iterator[IBSimulator]:
    """A started simulator on 127.0.0.1 and a free port, frozen clock, strict mode; stopped after."""
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "speed": 0.0,
        "start_time": FIXED_START,
        "strict": True,
    }
    settings.update(overrides)
    simulator = IBSimulator(SimConfig(**settings)).start()
    try:
        yield simulator
    finally:
        simulator.stop()


@contextmanager
def simulator_session(**overrides: Any) -> Iterator[IBSimulator]:
    """`running_simulator` plus the log guard; raise AssertionError on any protocol problem."""
    with ib_async_log_guard() as guard, running_simulator(**overrides) as simulator:
        yield simulator
        problems = guard.problems + simulator.protocol_errors
        if problems:
            raise AssertionError("IB protocol problems:\n  " + "\n  ".join(problems))


def connect(simulator: IBSimulator, client_id: int = 1, *, timeout: float = 2.0, **kwargs: Any) -> Any:
    """An ib_async `IB` connected to the simulator with strict startup and a request timeout."""
    from ib_async import IB

    ib = IB()
    ib.RequestTimeout = kwargs.pop("request_timeout", 5.0)
    ib.connect(simulator.host, simulator.port, clientId=client_id, timeout=timeout, raiseSyncErrors=True, **kwargs)
    return ib


def wait_until(ib: Any, predicate: Callable[[], object], timeout: float = 2.0) -> bool:
    """Let the client's loop run until `predicate()` is true; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        # ib_async's blocking calls raise when the peer drops; the predicate decides.
        with contextlib.suppress(ConnectionError):
            ib.sleep(0.002)
    return bool(predicate())
