"""`IBSimulator`: the whole simulated gateway on its own event loop, and its control API for tests.

The simulator runs an asyncio loop in a background thread (ib_async's blocking API runs the
client's loop in the caller's thread, so the two must not share one). Every control method may
be called from any thread: it runs on the simulator's loop and returns when done. Control
methods never sleep; to let the client see what they caused, wait on the client side (for
example with ``ib.sleep`` or a polling helper).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from apps.brokers import matching
from apps.brokers.ibsim.catalogue import Catalogue, Instrument
from apps.brokers.ibsim.clock import AlwaysOpen, ExchangeSchedule, Schedule, SimClock
from apps.brokers.ibsim.faults import Faults, Rejection
from apps.brokers.ibsim.orders import Broker
from apps.brokers.ibsim.prices import CsvReplay, PriceModel, RandomWalk
from apps.brokers.ibsim.protocol import SERVER_VERSION
from apps.brokers.ibsim.server import GatewayServer
from apps.brokers.ibsim.state import BrokerState, SimAccount, SimExecution, SimOrder, SimPosition

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class SimConfig:
    """Everything that shapes one simulator run."""

    host: str = "127.0.0.1"
    port: int = 4002
    accounts: tuple[str, ...] = ("DU1000001",)
    seed: int = 42
    speed: float = 1.0
    state_file: str | None = None
    control_port: int | None = None
    start_time: datetime | None = None
    schedule: str = "always"
    prices_csv: str | None = None
    liquidity: Decimal = Decimal(10_000)
    volatility: float = 0.0005
    tick_seconds: float = 1.0
    cash: Decimal = Decimal(1_000_000)
    server_version: int = SERVER_VERSION
    market_data_lines: int = 100
    rate_limit: bool = True
    strict: bool = False
    extra_instruments: tuple[Instrument, ...] = field(default_factory=tuple)


class IBSimulator:
    """A simulated IB Gateway; `start()` it, point ib_async at `port`, `stop()` it."""

    def __init__(self, config: SimConfig | None = None, **overrides: Any) -> None:
        self.config = replace(config or SimConfig(), **overrides)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._startup_error: BaseException | None = None
        self._tasks: list[asyncio.Task[None]] = []
        config = self.config
        self.clock = SimClock(config.start_time, config.speed)
        self.faults = Faults(rate_limit=config.rate_limit)
        catalogue = Catalogue(tuple(Catalogue().instruments) + config.extra_instruments)
        schedule: Schedule = AlwaysOpen() if config.schedule == "always" else ExchangeSchedule(config.schedule)
        walk = RandomWalk(seed=config.seed, volatility=config.volatility, liquidity=config.liquidity)
        prices: PriceModel = CsvReplay(config.prices_csv, catalogue, walk) if config.prices_csv else walk
        state = self._load_state()
        self.broker = Broker(
            state=state,
            catalogue=catalogue,
            clock=self.clock,
            schedule=schedule,
            prices=prices,
            faults=self.faults,
            tick_seconds=config.tick_seconds,
            exec_prefix=0xE0D5 + config.seed,
        )
        self.server = GatewayServer(
            self.broker, self.faults, server_version=config.server_version, market_data_lines=config.market_data_lines
        )
        self.server.strict = config.strict
        self.control: Any = None

    def _load_state(self) -> BrokerState:
        config = self.config
        path = Path(config.state_file) if config.state_file else None
        state = BrokerState.load(path) if path is not None and path.exists() else BrokerState()
        for code in config.accounts:
            state.accounts.setdefault(code, SimAccount(code=code, cash=config.cash))
        return state

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def host(self) -> str:
        return self.config.host

    def start(self, timeout: float = 10.0) -> IBSimulator:
        """Start the loop thread and listen; return once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        self._thread = threading.Thread(target=self._run_loop, name="ibsim", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("ibsim did not start")
        if self._startup_error is not None:
            raise RuntimeError("ibsim failed to start") from self._startup_error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection, save the state file, and end the loop thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._stopping.set)
        thread.join(timeout)
        self._thread = None

    def serve_forever(self) -> None:
        """Run on the calling thread until SIGINT or SIGTERM (the CLI's and honcho's mode)."""
        asyncio.run(self._main(handle_signals=True))

    def _run_loop(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced to start() through _startup_error
            if not self._ready.is_set():
                self._startup_error = exc
                self._ready.set()
            else:
                logger.exception("ibsim loop crashed")

    async def _main(self, handle_signals: bool = False) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if handle_signals:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._loop.add_signal_handler(signum, self._stopping.set)
        try:
            await self.server.listen(self.config.host, self.config.port)
            if self.config.control_port is not None:
                from apps.brokers.ibsim.control import ControlServer

                self.control = ControlServer(self)
                await self.control.listen(self.config.host, self.config.control_port)
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            return
        self._tasks = [asyncio.create_task(self._ticker()), asyncio.create_task(self._saver())]
        logger.info("ibsim listening on %s:%s (accounts %s)", self.host, self.port, ",".join(self.config.accounts))
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.server.drop_connections()
            await self.server.stop_listening()
            if self.control is not None:
                await self.control.close()
            self._save()

    async def _ticker(self) -> None:
        """Move market time on the tick grid while the clock runs."""
        while True:
            speed = self.clock.speed
            if speed <= 0:
                await asyncio.sleep(0.05)
                continue
            await asyncio.sleep(max(self.config.tick_seconds / speed, 0.001))
            self.broker.advance_to(self.clock.now())

    async def _saver(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._save()

    def _save(self) -> None:
        if self.config.state_file and self.broker.dirty:
            self.broker.state.save(self.config.state_file)
            self.broker.dirty = False

    # -- running control calls on the loop ---------------------------------------------------

    def call(self, function: Callable[[], T], timeout: float = 10.0) -> T:
        """Run `function` on the simulator's loop and return its result."""
        loop = self._loop
        if loop is None or self._thread is None:
            return function()  # not started (or serve_forever's own thread): run here
        if threading.current_thread() is self._thread:
            return function()

        async def run() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout)

    # -- the control API ---------------------------------------------------------------------

    def instrument(self, symbol: str | int, currency: str = "") -> Instrument:
        catalogue = self.broker.catalogue
        found = catalogue.get(symbol) if isinstance(symbol, int) else catalogue.find_symbol(symbol, currency)
        if found is None:
            raise KeyError(f"unknown or ambiguous instrument {symbol!r}")
        return found

    def quote(self, symbol: str | int) -> matching.Quote:
        """The current quote of an instrument (starting its price path if needed)."""
        instrument = self.instrument(symbol)
        return self.call(lambda: self.broker.quote(instrument.con_id))

    def set_price(
        self,
        symbol: str | int,
        last: Decimal | float | str | None = None,
        *,
        bid: Decimal | float | str | None = None,
        ask: Decimal | float | str | None = None,
        size: Decimal | float | int | None = None,
        bid_size: Decimal | float | int | None = None,
        ask_size: Decimal | float | int | None = None,
    ) -> matching.Quote:
        """Set the quote now (missing parts keep one tick around `last`) and run the matching."""
        instrument = self.instrument(symbol)

        def apply() -> matching.Quote:
            current = self.broker.quote(instrument.con_id)
            new_last = _dec(last) if last is not None else current.last
            tick = instrument.tick_size(new_last)
            default_size = _dec(size) if size is not None else current.bid_size
            quote = matching.Quote(
                bid=_dec(bid) if bid is not None else (new_last - tick if last is not None else current.bid),
                ask=_dec(ask) if ask is not None else (new_last + tick if last is not None else current.ask),
                last=new_last,
                bid_size=_dec(bid_size) if bid_size is not None else default_size,
                ask_size=_dec(ask_size) if ask_size is not None else default_size,
            )
            self.broker.set_quote(instrument.con_id, quote)
            return quote

        return self.call(apply)

    def set_liquidity(self, size: Decimal | int) -> None:
        """Displayed size (liquidity) of every quote from now on."""
        walk = self.broker.prices
        fallback = getattr(walk, "fallback", walk)
        for model in (walk, fallback):
            if isinstance(model, RandomWalk):
                model.liquidity = _dec(size)

    def advance(self, seconds: float) -> datetime:
        """Move simulated time forward, stepping prices and running session closes on the way."""

        def run() -> datetime:
            now = self.clock.advance(seconds)
            self.broker.advance_to(now)
            return now

        return self.call(run)

    def now(self) -> datetime:
        return self.clock.now()

    def fill(
        self, perm_id: int, quantity: Decimal | float | None = None, price: Decimal | float | str | None = None
    ) -> None:
        """Fill (part of) a working order now, whatever the market."""
        self.call(
            lambda: self.broker.force_fill(
                perm_id, _dec(quantity) if quantity is not None else None, _dec(price) if price is not None else None
            )
        )

    def auto_match(self, enabled: bool) -> None:
        """Switch the fill model off (orders then only fill through `fill`) or on."""
        self.call(lambda: setattr(self.faults, "auto_match", enabled))

    def reject_next(self, code: int = 201, reason: str = "Order rejected - reason:Rejected by the simulator") -> None:
        """Answer the next new order with this error instead of accepting it."""
        self.call(lambda: self.faults.rejections.append(Rejection(code, reason)))

    def delay_acks(self, seconds: float) -> None:
        """Process placeOrder/cancelOrder/reqGlobalCancel `seconds` (real time) after they arrive."""
        self.call(lambda: setattr(self.faults, "ack_delay", seconds))

    def duplicate_status(self, enabled: bool = True) -> None:
        """Send every openOrder/orderStatus twice, as IB sometimes does."""
        self.call(lambda: setattr(self.faults, "duplicate_status", enabled))

    def commission_before_execution(self, enabled: bool = True) -> None:
        """Send each commissionReport before its execDetails (ib_async then drops it)."""
        self.call(lambda: setattr(self.faults, "commission_first", enabled))

    def delay_commissions(self, seconds: float) -> None:
        """Send each commissionReport `seconds` (real time) after its execDetails (0: at once)."""
        self.call(lambda: setattr(self.faults, "commission_delay", float(seconds)))

    def peak_message_rate(self, reset: bool = False) -> int:
        """The most messages one client sent within one second, counted while the rate limit is on."""

        def read() -> int:
            peak = self.server.peak_rate
            if reset:
                self.server.peak_rate = 0
            return peak

        return self.call(read)

    def late_fills(self, enabled: bool = True, quantity: Decimal | float | None = None) -> None:
        """Fill a working order (all of it, or `quantity`) when a cancel for it arrives."""

        def apply() -> None:
            self.faults.late_fill_on_cancel = enabled
            self.faults.late_fill_quantity = _dec(quantity) if quantity is not None else None

        self.call(apply)

    def rate_limit(self, enabled: bool = True, per_second: int = 50) -> None:
        """Switch IB's per-connection message limit (error 100, then a disconnect) on or off."""

        def apply() -> None:
            self.faults.rate_limit = enabled
            self.faults.max_messages_per_second = per_second
            for session in self.server.sessions:
                session.rate.limit = per_second

        self.call(apply)

    def drop_connections(self) -> None:
        """Close every API socket at once."""
        self.call(self.server.drop_connections)

    def refuse_connections(self, seconds: float) -> None:
        """Drop every connection and refuse new ones for `seconds` of real time (a restart)."""

        def apply() -> None:
            self.faults.refuse_until = time.monotonic() + seconds
            self._tasks.append(asyncio.get_running_loop().create_task(self.server.refuse_connections(seconds)))

        self.call(apply)

    def backend_down(self, data_lost: bool = False) -> None:
        """IB's servers become unreachable: error 1100, no ticks or fills; sockets stay open."""

        def apply() -> None:
            self.faults.backend_down = True
            self.faults.data_lost = data_lost
            self.server.broadcast_notice(1100, "Connectivity between IBKR and Trader Workstation has been lost.")

        self.call(apply)

    def backend_up(self, data_lost: bool | None = None) -> None:
        """Connectivity restored: 1101 (data lost: market data must be re-requested) or 1102."""

        def apply() -> None:
            lost = self.faults.data_lost if data_lost is None else data_lost
            self.faults.backend_down = False
            if lost:
                for session in self.server.sessions:
                    session.subs.market.clear()
                text = "Connectivity between IBKR and Trader Workstation has been restored - data lost."
                self.server.broadcast_notice(1101, text)
            else:
                text = "Connectivity between IBKR and Trader Workstation has been restored - data maintained."
                self.server.broadcast_notice(1102, text)

        self.call(apply)

    def set_buying_power(self, account: str, amount: Decimal | float | None) -> None:
        """Fix an account's buying power (None: back to net liquidation × leverage)."""
        self.call(
            lambda: setattr(
                self.broker.state.accounts[account], "buying_power_override", _dec(amount) if amount else None
            )
        )

    # -- what the simulator holds (copies) ---------------------------------------------------

    def orders(self) -> list[SimOrder]:
        return self.call(lambda: copy.deepcopy(list(self.broker.state.orders.values())))

    def order(self, client_id: int, order_id: int) -> SimOrder:
        found = self.call(lambda: copy.deepcopy(self.broker.state.order_for(client_id, order_id)))
        if found is None:
            raise KeyError(f"no order {order_id} of client {client_id}")
        return found

    def executions(self) -> list[SimExecution]:
        return self.call(lambda: copy.deepcopy(self.broker.state.executions))

    def positions(self) -> list[SimPosition]:
        return self.call(lambda: copy.deepcopy([p for p in self.broker.state.positions.values() if p.quantity]))

    def account(self, code: str) -> SimAccount:
        return self.call(lambda: copy.deepcopy(self.broker.state.accounts[code]))

    @property
    def protocol_errors(self) -> list[str]:
        return list(self.server.protocol_errors)

    def take_protocol_errors(self) -> list[str]:
        """Return and forget the protocol errors seen so far (for tests that provoke them)."""

        def take() -> list[str]:
            errors = list(self.server.protocol_errors)
            self.server.protocol_errors.clear()
            return errors

        return self.call(take)


def _dec(value: Decimal | float | int | str) -> Decimal:
    """Decimal from anything numeric; floats go through repr so that 190.01 stays 190.01."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)
