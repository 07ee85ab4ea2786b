"""The asyncio TCP server: handshake, sessions, dispatch, and who hears what.

One `Session` per socket, speaking the protocol of `protocol.py`. `GatewayServer` keeps the
sessions, routes each request to its handler (`handlers.HANDLERS`) and implements the broker's
`Notifier`: order messages go to the client that owns the order and to the master client (id 0),
positions to every session subscribed with reqPositions, account and portfolio updates to the
sessions subscribed to that account, ticks to the market-data lines of that instrument.

Connection-level faults live here too: error 326 for a client id already in use, the message
rate limit (error 100, then a disconnect), dropping every socket, refusing connections for a
while (a nightly restart) and the 1100/1101/1102 backend outage notices.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, cast

from apps.brokers import matching
from apps.brokers.ibsim import accounts, messages
from apps.brokers.ibsim.faults import RateLimiter
from apps.brokers.ibsim.interfaces import ib_time
from apps.brokers.ibsim.orders import Broker
from apps.brokers.ibsim.protocol import (
    API_SIGN,
    MIN_SERVER_VERSION,
    ProtocolError,
    encode,
    parse_fields,
    parse_version_range,
    split_frames,
)
from apps.brokers.ibsim.state import SimExecution, SimOrder

if TYPE_CHECKING:
    from apps.brokers.ibsim.faults import Faults

logger = logging.getLogger(__name__)

START_API = 71
ORDER_MESSAGES = frozenset({3, 4, 58})
# Account values pushed after each fill (IB refreshes the full set only every few minutes).
LIVE_ACCOUNT_KEYS = frozenset(
    {"NetLiquidation", "TotalCashValue", "CashBalance", "GrossPositionValue", "AvailableFunds", "BuyingPower"}
    | {"EquityWithLoanValue", "InitMarginReq", "MaintMarginReq", "RealizedPnL", "UnrealizedPnL", "StockMarketValue"}
)
ACCOUNT_PUSH_SECONDS = 0.05
FARM_NOTICES = (
    (2104, "Market data farm connection is OK:usfarm"),
    (2106, "HMDS data farm connection is OK:ushmds"),
    (2158, "Sec-def data farm connection is OK:secdefnj"),
)


@dataclass
class MarketLine:
    """One reqMktData subscription of one session."""

    req_id: int
    con_id: int
    data_type: int


@dataclass
class Subscriptions:
    """What a session asked to keep receiving."""

    positions: bool = False
    account: str | None = None
    account_multi: dict[int, str] = field(default_factory=dict)
    positions_multi: dict[int, str] = field(default_factory=dict)
    pnl: dict[int, str] = field(default_factory=dict)
    pnl_single: dict[int, tuple[str, int]] = field(default_factory=dict)
    market: dict[int, MarketLine] = field(default_factory=dict)
    market_data_type: int = 1


class Session(asyncio.Protocol):
    """One API connection."""

    def __init__(self, server: GatewayServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.version = 0
        self.client_id: int | None = None
        self.subs = Subscriptions()
        self.rate = RateLimiter(server.faults.max_messages_per_second)
        self.closed = False
        self.peer = ""
        self._pending: list[bytes] = []

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.peer = str(transport.get_extra_info("peername"))
        if self.server.faults.refusing():
            self.transport.abort()
            return
        self.server.sessions.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            if not self.version and not self._handshake():
                return
            for payload in split_frames(self.buffer):
                if self.closed:
                    return
                self._receive(parse_fields(payload))
        except ProtocolError as exc:
            self.server.protocol_error(f"{self.peer}: {exc}")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.forget(self)

    # -- helpers -----------------------------------------------------------------------------

    def _handshake(self) -> bool:
        """``API\\0`` + one frame ``v<min>..<max>``; answer with version and connection time."""
        if len(self.buffer) < 4:
            return False
        if bytes(self.buffer[:4]) != API_SIGN:
            raise ProtocolError("connection does not start with API\\0")
        del self.buffer[:4]
        payloads = split_frames(self.buffer)
        if not payloads:
            self.buffer[:0] = API_SIGN  # wait for the rest of the hello
            return False
        low, high, _options = parse_version_range(payloads[0])
        version = min(high, self.server.server_version)
        if version < max(low, MIN_SERVER_VERSION):
            # Real gateways close the socket on a client whose range they cannot serve.
            logger.warning("refusing client versions %s..%s (server %s)", low, high, self.server.server_version)
            self.close()
            return False
        self.version = version
        now = self.server.broker.clock.now()
        self.send(encode((version, now.strftime("%Y%m%d %H:%M:%S") + " UTC")))
        # Frames that came in the same packet after the hello are handled by the caller.
        for payload in payloads[1:]:
            self._receive(parse_fields(payload))
        return True

    def _receive(self, fields: list[str]) -> None:
        faults = self.server.faults
        if faults.rate_limit:
            process, warn, disconnect = self.rate.admit()
            self.server.peak_rate = max(self.server.peak_rate, self.rate.count)
            if warn:
                text = (
                    f"Max rate of messages per second has been exceeded:max={self.rate.limit} rec={self.rate.count} (1)"
                )
                self.send(messages.error(-1, 100, text))
            if disconnect:
                logger.warning("client %s keeps exceeding the message rate: disconnecting", self.client_id)
                self.close()
                return
            if not process:
                return
        self.server.dispatch(self, fields)

    def send(self, data: bytes) -> None:
        """Queue a frame; everything queued in one loop iteration goes out in one write."""
        if self.transport is None or self.closed:
            return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        if self._pending and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self._pending))
        self._pending.clear()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.flush()  # what was said before closing (error 326, error 100) still goes out
            self.closed = True
            self.transport.close()
            self.server.forget(self)


class GatewayServer:
    """Sessions, dispatch and message routing for one simulated gateway."""

    def __init__(self, broker: Broker, faults: Faults, *, server_version: int, market_data_lines: int = 100) -> None:
        from apps.brokers.ibsim.handlers import HANDLERS

        self.broker = broker
        self.faults = faults
        self.server_version = server_version
        self.market_data_lines = market_data_lines
        self.handlers = HANDLERS
        self.sessions: set[Session] = set()
        self.by_client: dict[int, Session] = {}
        self.protocol_errors: list[str] = []
        self.unknown_messages: list[int] = []
        self.peak_rate = 0  # the most messages one client sent in any one-second window (rate limit on)
        self.strict = False
        self._server: asyncio.Server | None = None
        self._dirty_accounts: dict[str, set[int]] = {}
        self._account_flush: asyncio.TimerHandle | None = None
        self.host = "127.0.0.1"
        self.port = 0
        broker.notifier = self

    # -- lifecycle ---------------------------------------------------------------------------

    async def listen(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Session(self), host, port, reuse_address=True)
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def drop_connections(self) -> None:
        """Close every API socket, as a gateway crash or restart does."""
        for session in list(self.sessions):
            session.close()

    async def refuse_connections(self, seconds: float) -> None:
        """A nightly restart: drop everyone, refuse connections for `seconds`, then listen again."""
        self.drop_connections()
        await self.stop_listening()
        await asyncio.sleep(seconds)
        await self.listen(self.host, self.port)

    def forget(self, session: Session) -> None:
        self.sessions.discard(session)
        if session.client_id is not None and self.by_client.get(session.client_id) is session:
            del self.by_client[session.client_id]

    def protocol_error(self, text: str) -> None:
        logger.error("ibsim protocol error: %s", text)
        self.protocol_errors.append(text)

    # -- dispatch ----------------------------------------------------------------------------

    def dispatch(self, session: Session, fields: list[str]) -> None:
        try:
            message_id = int(fields[0])
        except (ValueError, IndexError):
            self.protocol_error(f"message without a numeric id: {fields[:3]!r}")
            return
        if session.client_id is None and message_id != START_API:
            self.protocol_error(f"message {message_id} before startApi")
            return
        handler = self.handlers.get(message_id)
        if handler is None:
            # Loud on purpose: an unanswered request hangs an ib_async call forever.
            self.unknown_messages.append(message_id)
            self.protocol_error(f"unknown message id {message_id}: {fields!r}")
            return
        if message_id in ORDER_MESSAGES and self.faults.ack_delay > 0:
            loop = asyncio.get_running_loop()
            loop.call_later(self.faults.ack_delay, self._run, handler, session, fields)
            return
        self._run(handler, session, fields)

    def _run(self, handler: object, session: Session, fields: list[str]) -> None:
        if session.closed:
            return
        try:
            handler(self, session, fields)  # type: ignore[operator]
        except ProtocolError as exc:
            self.protocol_error(f"message {fields[0]}: {exc}")
        except Exception:
            logger.exception("ibsim handler for message %s failed", fields[0])
            self.protocol_errors.append(f"handler for message {fields[0]} raised")

    def start_api(self, session: Session, client_id: int) -> None:
        """Register a client id, or refuse it with 326 and close, as TWS does."""
        if client_id in self.by_client:
            session.send(
                messages.error(
                    -1, 326, "Unable to connect as the client id is already in use. Retry with a unique client id."
                )
            )
            session.close()
            return
        session.client_id = client_id
        self.by_client[client_id] = session
        state = self.broker.state
        session.send(messages.managed_accounts(list(state.accounts)))
        session.send(messages.next_valid_id(state.last_order_ids.get(client_id, 0) + 1))
        if self.faults.backend_down:
            session.send(messages.error(-1, 1100, "Connectivity between IBKR and Trader Workstation has been lost."))
            return
        for code, text in FARM_NOTICES:
            session.send(messages.error(-1, code, text))

    # -- notifier: who hears what ------------------------------------------------------------

    def order_sessions(self, order: SimOrder) -> list[Session]:
        """The owner of the order and the master client (id 0)."""
        targets = []
        owner = self.by_client.get(order.client_id)
        if owner is not None:
            targets.append(owner)
        master = self.by_client.get(0)
        if master is not None and master is not owner:
            targets.append(master)
        return targets

    def _broadcast(self, sessions: Iterable[Session], data: bytes) -> None:
        for session in sessions:
            session.send(data)

    def order_changed(self, order: SimOrder, *, open_order: bool = True) -> None:
        targets = self.order_sessions(order)
        if not targets:
            return
        data = messages.order_status(order)
        if open_order:
            data = messages.open_order(order, self.broker.catalogue.get(order.con_id)) + data  # type: ignore[arg-type]
        if self.faults.duplicate_status:
            data += data  # IB documents that it may send the same status more than once
        self._broadcast(targets, data)

    def order_error(self, client_id: int, order_id: int, code: int, message: str) -> None:
        session = self.by_client.get(client_id)
        if session is not None:
            session.send(messages.error(order_id, code, message))

    def execution(self, order: SimOrder, execution: SimExecution) -> None:
        instrument = self.broker.catalogue.get(execution.con_id)
        assert instrument is not None
        data = messages.exec_details(-1, execution, instrument, ib_time(execution.time))
        self._broadcast(self.order_sessions(order), data)

    def commission(self, order: SimOrder, execution: SimExecution) -> None:
        self._broadcast(self.order_sessions(order), messages.commission_report(execution))

    def what_if(self, order: SimOrder, margins: dict[str, str], commission: Decimal) -> None:
        session = self.by_client.get(order.client_id)
        instrument = self.broker.catalogue.get(order.con_id)
        if session is not None and instrument is not None:
            session.send(messages.open_order(order, instrument, what_if=True, margins=margins, commission=commission))

    def portfolio_changed(self, account: str, con_id: int) -> None:
        """Push the position at once; coalesce account, portfolio and P&L updates.

        TWS streams position changes but refreshes account values only every few minutes, so a
        burst of fills must not become a burst of ~20 account messages per fill: they are sent
        at most every ACCOUNT_PUSH_SECONDS, with the latest values.
        """
        broker = self.broker
        instrument = broker.catalogue.get(con_id)
        position = broker.state.positions.get((account, con_id))
        if instrument is None or position is None:
            return
        position_data = messages.position(account, instrument, position)
        for session in list(self.sessions):
            subs = session.subs
            if subs.positions:
                session.send(position_data)
            for req_id, acct in subs.positions_multi.items():
                if acct in (account, "", "All"):
                    session.send(messages.position_multi(req_id, account, instrument, position))
        self._dirty_accounts.setdefault(account, set()).add(con_id)
        if self._account_flush is None:
            loop = asyncio.get_running_loop()
            self._account_flush = loop.call_later(ACCOUNT_PUSH_SECONDS, self.flush_accounts)

    def flush_accounts(self) -> None:
        """Send the coalesced account values, portfolio rows and P&L to their subscribers."""
        self._account_flush = None
        dirty, self._dirty_accounts = self._dirty_accounts, {}
        broker = self.broker
        for account, con_ids in dirty.items():
            watchers = [s for s in self.sessions if s.subs.account == account or s.subs.account_multi or s.subs.pnl]
            if not watchers:
                continue
            snap = accounts.snapshot(broker.state, account, broker.mark)
            values = [(k, v, c) for k, v, c in snap.values() if k in LIVE_ACCOUNT_KEYS]
            for session in watchers:
                subs = session.subs
                if subs.account == account:
                    for con_id in sorted(con_ids):
                        instrument = broker.catalogue.get(con_id)
                        position = broker.state.positions.get((account, con_id))
                        if instrument is None or position is None:
                            continue
                        price = broker.mark(con_id)
                        unrealized = (price - position.average_cost) * position.quantity
                        value = position.quantity * price
                        session.send(messages.portfolio_value(account, instrument, position, price, value, unrealized))
                    for key, value_text, currency in values:
                        session.send(messages.simple(messages.ACCT_VALUE, 2, key, value_text, currency, account))
                    session.send(messages.simple(messages.ACCT_UPDATE_TIME, 1, broker.clock.now().strftime("%H:%M")))
                for req_id, acct in subs.account_multi.items():
                    if acct == account:
                        for key, value_text, currency in values:
                            row = (messages.ACCOUNT_UPDATE_MULTI, 1, req_id, account, "", key, value_text, currency)
                            session.send(messages.simple(*row))
                for req_id, acct in subs.pnl.items():
                    if acct == account:
                        session.send(pnl_message(self, req_id, account))

    def quote_changed(self, con_id: int, quote: matching.Quote) -> None:
        for session in list(self.sessions):
            for line in session.subs.market.values():
                if line.con_id == con_id:
                    session.send(quote_ticks(line.req_id, quote, line.data_type))

    def broadcast_notice(self, code: int, text: str) -> None:
        for session in list(self.sessions):
            if session.client_id is not None:
                session.send(messages.error(-1, code, text))


def quote_ticks(req_id: int, quote: matching.Quote, data_type: int) -> bytes:
    """Bid, ask and last as tickPrice messages (the delayed tick types for delayed data)."""
    delayed = data_type in (3, 4)
    bid, ask, last = (66, 67, 68) if delayed else (1, 2, 4)
    return (
        messages.tick_price(req_id, bid, quote.bid, quote.bid_size)
        + messages.tick_price(req_id, ask, quote.ask, quote.ask_size)
        + messages.tick_price(req_id, last, quote.last, Decimal(100))
    )


def pnl_message(server: GatewayServer, req_id: int, account: str) -> bytes:
    snap = accounts.snapshot(server.broker.state, account, server.broker.mark)
    daily = snap.unrealized_pnl + snap.realized_pnl
    return messages.simple(messages.PNL, req_id, daily, snap.unrealized_pnl, snap.realized_pnl)
