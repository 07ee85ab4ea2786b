"""Fixtures of the connector tests: the simulator on a free port, an IB account pointing at it,
the gateway service in a thread of its own (its own event loop, as in the process), and the
applier of broker events (what `run_applier` does, in the test's thread)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings

from apps.brokers.ib import wire
from apps.brokers.ib.context import GatewayConfig
from apps.brokers.ib.gateway import Gateway
from apps.brokers.ibsim import IBSimulator
from apps.brokers.ibsim.testing import simulator_session
from apps.brokers.management.commands.run_gateway import gateway_config
from apps.brokers.models import AccountMode, Broker, BrokerAccount
from apps.brokers.services import Connection, InstrumentData, broker_account_create, instrument_upsert
from apps.common.context import Actor
from apps.common.redis import get_redis
from apps.events.streams import BROKER_EVENTS
from apps.orders.models import Order
from apps.orders.services.broker_events import BrokerEvent, Fill, broker_event_apply

SYSTEM = Actor.system("test")
CODE = "DU1000001"
CLIENT_ID = 7


@pytest.fixture
def sim() -> Iterator[IBSimulator]:
    with simulator_session(accounts=(CODE, "DU1000002")) as simulator:
        yield simulator


def make_ib_account(
    tenant: Any, sim: IBSimulator, *, client_id: int = CLIENT_ID, code: str = CODE, **extra: Any
) -> BrokerAccount:
    instrument_upsert(data=InstrumentData("AAPL", "NASDAQ", "USD", "STK", Decimal("0.01"), con_id=265598), actor=SYSTEM)
    instrument_upsert(data=InstrumentData("MSFT", "NASDAQ", "USD", "STK", Decimal("0.01"), con_id=272093), actor=SYSTEM)
    account = broker_account_create(
        tenant=tenant,
        actor=SYSTEM,
        broker=Broker.IB,
        account_code=code,
        mode=AccountMode.PAPER,
        connection=Connection(sim.host, sim.port, client_id),
    )
    if extra:
        BrokerAccount.objects.filter(id=account.id).update(**extra)
        account.refresh_from_db()
    return account


def fast_config(account: BrokerAccount, **overrides: Any) -> GatewayConfig:
    config = gateway_config(account)
    fast: dict[str, Any] = {
        "heartbeat_seconds": 0.3,
        "heartbeat_timeout": 1.0,
        "request_timeout": 5.0,
        "connect_timeout": 3.0,
        "poll_seconds": 0.1,
        "backoff_base": 0.05,
        "backoff_cap": 0.3,
        "commission_grace": 0.3,
        "breaker_open_seconds": 0.5,
    }
    return replace(config, **(fast | overrides))


class GatewayThread:
    """The gateway service on its own event loop in a background thread."""

    def __init__(self, config: GatewayConfig, others: tuple[GatewayConfig, ...] = ()) -> None:
        self.config = config
        self.others = others
        self.gateway: Gateway | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="gateway", daemon=True)
        self._ready = threading.Event()

    def _main(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.gateway = Gateway(self.config, others=self.others)
            self._ready.set()
            await self.gateway.run()

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    def start(self) -> GatewayThread:
        self._thread.start()
        self._ready.wait(10)
        return self

    def call(self, coroutine_function: Callable[[Gateway], Any], timeout: float = 20.0) -> Any:
        assert self.loop is not None and self.gateway is not None
        gateway = self.gateway
        return asyncio.run_coroutine_threadsafe(coroutine_function(gateway), self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop is not None and self.gateway is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.gateway.stop)
        self._thread.join(20)
        assert not self._thread.is_alive(), "gateway thread did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def run_gateway() -> Iterator[Callable[..., GatewayThread]]:
    started: list[GatewayThread] = []

    def start(config: GatewayConfig, others: tuple[GatewayConfig, ...] = ()) -> GatewayThread:
        thread = GatewayThread(config, others).start()
        started.append(thread)
        return thread

    yield start
    for thread in reversed(started):
        thread.stop()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def account_status(account: BrokerAccount) -> str:
    return BrokerAccount.objects.values_list("status", flat=True).get(id=account.id)


class Applier:
    """Applies `ib:events` to orders as the applier process does, from where it last stopped."""

    def __init__(self) -> None:
        self.cursor = "0-0"
        self.seen: list[dict[str, str]] = []

    def __call__(self) -> int:
        client = get_redis()
        applied = 0
        for entry_id, raw in client.xrange(BROKER_EVENTS, min=f"({self.cursor}" if self.cursor != "0-0" else "-"):
            self.cursor = entry_id.decode()
            fields = {k.decode(): v.decode() for k, v in raw.items()}
            self.seen.append(fields)
            arguments = wire.decode(fields)
            fill = arguments.pop("fill")
            broker_event_apply(event=BrokerEvent(**arguments, fill=Fill(**fill) if fill else None))
            applied += 1
        return applied

    def kinds(self, order_id: Any) -> list[str]:
        return [fields["kind"] for fields in self.seen if fields["order_id"] == str(order_id)]


@pytest.fixture
def applier() -> Applier:
    return Applier()


def order_state(order_id: Any, applier: Applier) -> str:
    applier()
    return Order.objects.values_list("state", flat=True).get(id=order_id)


def place(member: Any, account: BrokerAccount, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "account_id": str(account.id),
        "symbol": "AAPL",
        "side": "BUY",
        "quantity": "10",
        "order_type": "LMT",
        "limit_price": "150.00",
        "time_in_force": "DAY",
    }
    body.update(overrides)
    response = member.api.post("/orders", {k: v for k, v in body.items() if v is not ...})
    assert response.status_code == 201, response.json_body
    return response.json_body


assert settings.ROOT_URLCONF  # Django is configured for the threads above
