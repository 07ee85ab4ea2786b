"""The gateway's market data lines: one IB line per instrument that any tenant wants, ticks to Redis.

What tenants want is the union of their subscriptions, which the `marketdata` app publishes to the
`md:wanted` hash (and pings `md.control`); this module never reads the subscription table (that
app sits above `brokers`). One gateway in the whole system holds the lines: the one holding the
`md:feed` lease in Redis (renewed every second, so another gateway takes over within the lease's
life when it dies), because IB counts lines per login and every extra holder would pay for the
same instrument twice.

IB's rules this follows:
- a login has a budget of lines (100 by default; `MARKETDATA_LINES_PER_LOGIN`); wishes beyond it
  are refused here, oldest wishes first, without asking IB. IB itself may still answer 101 ("max
  number of tickers") when other sessions of the login (TWS, another API client) hold lines: the
  instrument is then marked REFUSED with IB's reason, and retried when one of our lines frees up
  or after a reconnect;
- 1101 (connectivity restored, data lost) means IB dropped every line: each is cancelled and
  requested again; 1102 (data maintained) keeps them; a new socket starts with none;
- errors about a market data request arrive with the request id only; the gateway moves
  ib_async's request ids far above our order ids (`REQUEST_ID_BASE`), and still only the market
  data error codes are claimed here; the rest go on to the order listener.

Each tick batch becomes one Redis pipeline, written from a thread of its own (never on the event
loop): the instrument's `md:last:<id>` hash (what P&L and the paper broker read) and one entry
per ticker on `ev.l1` (trimmed to `MARKETDATA_L1_MAXLEN`, approximately).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any

import orjson
import redis
from django.conf import settings
from ib_async import Contract

from apps.brokers.ib.context import Context, log
from apps.brokers.ib.pacing import Priority
from apps.brokers.models import Instrument
from apps.events.prices import (
    FEED_CONTROL,
    FEED_LINES,
    FEED_SENTINEL,
    FEED_WANTED,
    L1_STREAM,
    LINE_ACTIVE,
    LINE_REFUSED,
    LastPrice,
    last_price_set,
)

FEED_LEASE = "md:feed"
# Errors IB sends about a market data request (101: too many lines, 354/10089/10090/10168:
# not subscribed to the data, 200: no such contract, 300/322: bad ticker id, 10197: competing session).
MARKET_DATA_ERRORS = frozenset({101, 200, 300, 309, 310, 312, 322, 354, 10089, 10090, 10091, 10168, 10186, 10197})
MARKET_DATA_NOTICES = frozenset({10167})  # "displaying delayed market data": a warning


@dataclass(frozen=True, slots=True)
class Wanted:
    """One instrument some tenant wants quotes for, as `md:wanted` carries it."""

    instrument_id: str
    symbol: str
    con_id: int | None
    exchange: str = "SMART"
    currency: str = "USD"
    since: str = ""  # the oldest subscription's time: within the budget, older wishes win

    def contract(self) -> Contract:
        if self.con_id:
            return Contract(conId=self.con_id, exchange="SMART")
        return Contract(symbol=self.symbol, secType="STK", exchange="SMART", currency=self.currency)


def wanted_decode(raw: Mapping[Any, Any]) -> dict[str, Wanted] | None:
    """The wanted set from `md:wanted`; None when the hash was never published (or Redis lost it)."""
    fields = {_text(key): _text(value) for key, value in raw.items()}
    if FEED_SENTINEL not in fields:
        return None
    wanted = {}
    for instrument_id, text in fields.items():
        if instrument_id == FEED_SENTINEL:
            continue
        data = orjson.loads(text)
        con_id = data.get("con_id")
        wanted[instrument_id] = Wanted(
            instrument_id=instrument_id,
            symbol=str(data.get("symbol", "")),
            con_id=int(con_id) if con_id else None,
            exchange=str(data.get("exchange", "SMART")),
            currency=str(data.get("currency", "USD")),
            since=str(data.get("since", "")),
        )
    return wanted


def pinned_instruments(*, con_ids: list[int]) -> dict[int, str]:
    """Instrument ids of the lines a gateway was started with (`--market-data`), by con id."""
    return {
        int(con_id): str(pk) for pk, con_id in Instrument.objects.filter(con_id__in=con_ids).values_list("id", "con_id")
    }


@dataclass(slots=True)
class Line:
    """A line we hold at IB: the wish, ib_async's ticker and the request id IB knows it by."""

    wanted: Wanted
    contract: Contract
    ticker: Any
    req_id: int


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(value: Any) -> Decimal | None:
    """An ib_async tick value as a decimal; NaN (and -1, IB's "no value") is none."""
    if value is None:
        return None
    number = float(value)
    if math.isnan(number) or math.isinf(number) or number < 0:
        return None
    # ib_async hands sizes (and round prices) over as floats: 300.0 is the decimal 300
    return Decimal(int(number)) if number.is_integer() else Decimal(repr(number))


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class MarketData:
    """The lines of one gateway, kept equal to the wanted set while this gateway holds the feed."""

    def __init__(self, context: Context, *, lines: int | None = None, lease_seconds: float = 10.0) -> None:
        self.context = context
        self.budget = lines or settings.MARKETDATA_LINES_PER_LOGIN
        self.l1_maxlen = settings.MARKETDATA_L1_MAXLEN
        self.held: dict[str, Line] = {}
        self.refused: dict[str, str] = {}  # by IB: instrument id → IB's reason
        self.owner = False
        self.requests = 0  # reqMktData sent (all sessions)
        self.ticks = 0
        self._by_req: dict[int, str] = {}
        self._by_ticker: dict[int, str] = {}  # id(ticker) → instrument id
        self._pinned: dict[str, Wanted] | None = None
        self._written: dict[str, dict[str, str]] | None = None
        self._sync_lock: asyncio.Lock | None = None
        self._lease = context.redis.lock(FEED_LEASE, timeout=lease_seconds, thread_local=False)
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ib-md-control")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ib-md-ticks")

    # -- hooks of the gateway ------------------------------------------------------------------

    def attach(self, ib: Any) -> None:
        """Listen to a new connection's ticks."""
        ib.pendingTickersEvent += self.on_tickers

    def detach(self) -> None:
        """The connection is gone, and IB's lines with it."""
        self.held.clear()
        self._by_req.clear()
        self._by_ticker.clear()

    async def connected(self) -> None:
        """A new session holds no lines: request every wanted one (IB's refusals are retried)."""
        self.detach()
        self.refused.clear()
        await self.sync()

    async def resubscribe(self) -> None:
        """After 1101 IB has dropped every line: cancel ours and request them again."""
        async with self._lock():
            for instrument_id in list(self.held):
                await self._cancel(instrument_id)
            self.refused.clear()
        await self.sync()
        log.info("ib.market_data_resubscribed %d line(s) after 1101", len(self.held))

    async def run(self) -> None:
        """Follow `md.control` (and renew the lease) while connected; resync at least every second."""
        loop = asyncio.get_running_loop()
        last_id = await loop.run_in_executor(self._reader, self._latest_control_id)
        while True:
            try:
                entries = await loop.run_in_executor(
                    self._reader, partial(self.context.redis.xread, {FEED_CONTROL: last_id}, count=100, block=1000)
                )
            except redis.RedisError as exc:
                log.warning("ib.market_data_control_unreadable: %s", exc)
                await asyncio.sleep(1.0)
                entries = []
            for _, items in entries or []:
                if items:
                    last_id = _text(items[-1][0])
            await self.sync()

    def close(self) -> None:
        """The gateway stops: give the lease up (another gateway takes the feed at once)."""
        if self.owner:
            with contextlib.suppress(redis.RedisError, redis.exceptions.LockError):
                self.context.redis.delete(FEED_LINES)
                self._lease.release()
        self.owner = False
        for pool in (self._reader, self._writer):
            pool.shutdown(wait=False, cancel_futures=True)

    # -- keeping the lines equal to the wanted set ---------------------------------------------

    def _lock(self) -> asyncio.Lock:
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        return self._sync_lock

    async def sync(self) -> None:
        """Cancel the lines nobody wants, request the wanted ones we lack, publish their states."""
        context = self.context
        if context.ib is None or not context.backend_up:
            return
        loop = asyncio.get_running_loop()
        async with self._lock():
            try:
                owner, wanted = await loop.run_in_executor(self._reader, self._read_wanted)
            except redis.RedisError as exc:
                log.warning("ib.market_data_wanted_unreadable: %s", exc)
                return
            if owner != self.owner:
                log.info("ib.market_data_feed %s", "taken" if owner else "lost")
                self.owner = owner
            if wanted is None:  # never published, or Redis lost it: keep what we hold
                wanted = {iid: line.wanted for iid, line in self.held.items()}
            wanted = {**(wanted if owner else {}), **(await self._pinned_lines())}
            ordered = sorted(wanted.values(), key=lambda w: (w.since, w.instrument_id))
            allowed = {w.instrument_id: w for w in ordered[: self.budget]}
            freed = False
            for instrument_id in [iid for iid in self.held if iid not in allowed]:
                await self._cancel(instrument_id)
                freed = True
            for instrument_id in [iid for iid in self.refused if iid not in allowed or freed]:
                del self.refused[instrument_id]
            for instrument_id, wish in allowed.items():
                if instrument_id not in self.held and instrument_id not in self.refused:
                    await self._request(wish)
            if owner:
                over = [w.instrument_id for w in ordered[self.budget :]]
                reason = f"line budget of {self.budget} lines per IB login reached at the gateway"
                self._publish_states(dict.fromkeys(over, reason))

    async def _pinned_lines(self) -> dict[str, Wanted]:
        if self._pinned is None:
            pinned = self.context.config.market_data
            ids = await self.context.db(pinned_instruments, con_ids=[con_id for _, con_id in pinned])
            self._pinned = {
                ids[con_id]: Wanted(instrument_id=ids[con_id], symbol=symbol, con_id=con_id)
                for symbol, con_id in pinned
                if con_id in ids
            }
        return self._pinned

    def _read_wanted(self) -> tuple[bool, dict[str, Wanted] | None]:
        return self._hold_lease(), wanted_decode(self.context.redis.hgetall(FEED_WANTED))

    def _hold_lease(self) -> bool:
        if self.owner:
            with contextlib.suppress(redis.exceptions.LockError):
                self._lease.reacquire()
                return True
        return bool(self._lease.acquire(blocking=False))

    def _latest_control_id(self) -> str:
        with contextlib.suppress(redis.RedisError):
            latest = self.context.redis.xrevrange(FEED_CONTROL, count=1)
            if latest:
                return _text(latest[0][0])
        return "0-0"

    async def _request(self, wish: Wanted) -> None:
        context = self.context
        ib = context.ib
        contract = wish.contract()

        def send() -> Any:
            # Recorded in the same step as the send: IB's answer (a 101) may be read before the
            # coroutine that queued the send resumes.
            ticker = ib.reqMktData(contract)
            req_id = int(ib.wrapper.ticker2ReqId["mktData"].get(ticker, 0))
            self.held[wish.instrument_id] = Line(wish, contract, ticker, req_id)
            self._by_req[req_id] = wish.instrument_id
            self._by_ticker[id(ticker)] = wish.instrument_id
            self.requests += 1
            return ticker

        await context.pacer.send(send, Priority.REQUEST)
        log.info("ib.market_data_requested %s (%s)", wish.symbol, wish.con_id or "by symbol")

    async def _cancel(self, instrument_id: str) -> None:
        line = self.held.pop(instrument_id, None)
        if line is None:
            return
        self._by_req.pop(line.req_id, None)
        self._by_ticker.pop(id(line.ticker), None)
        ib = self.context.ib
        await self.context.pacer.send(lambda: ib.cancelMktData(line.contract), Priority.REQUEST)
        log.info("ib.market_data_cancelled %s", line.wanted.symbol)

    def _publish_states(self, over_budget: Mapping[str, str]) -> None:
        """Write `md:lines` (what GET /marketdata/subscriptions shows) when it changed."""
        states: dict[str, dict[str, str]] = {}
        for instrument_id in self.held:
            states[instrument_id] = {"state": LINE_ACTIVE, "reason": ""}
        for instrument_id, reason in {**self.refused, **over_budget}.items():
            states[instrument_id] = {"state": LINE_REFUSED, "reason": reason}
        if states == self._written:
            return
        self._written = states
        login = self.context.config.login
        mapping = {iid: orjson.dumps({**state, "login": login, "at": _now()}) for iid, state in states.items()}

        def write() -> None:
            pipe = self.context.redis.pipeline(transaction=True)
            pipe.delete(FEED_LINES)
            if mapping:
                pipe.hset(FEED_LINES, mapping=mapping)  # type: ignore[arg-type]
            pipe.execute()

        self._write(write)

    # -- IB's callbacks (on the event loop) ----------------------------------------------------

    def on_error(self, req_id: int, code: int, text: str) -> bool:
        """Claim an error about one of our market data requests; False leaves it to the order listener."""
        instrument_id = self._by_req.get(req_id)
        if instrument_id is None or code not in MARKET_DATA_ERRORS | MARKET_DATA_NOTICES:
            return False
        if code in MARKET_DATA_NOTICES:
            log.info("ib.market_data_notice %s (id %s): %s", code, req_id, text)
            return True
        line = self.held.pop(instrument_id, None)
        self._by_req.pop(req_id, None)
        if line is not None:
            self._by_ticker.pop(id(line.ticker), None)
            ib = self.context.ib
            if ib is not None:
                # IB holds no line for a refused request: forget the ticker without sending a cancel.
                ib.wrapper.endTicker(line.ticker, "mktData")
        self.refused[instrument_id] = f"IB error {code}: {text}"
        log.warning("ib.market_data_refused %s: IB error %s: %s", line.wanted.symbol if line else req_id, code, text)
        if self.owner:
            self._publish_states({})
        return True

    def on_tickers(self, tickers: Any) -> None:
        pipe = self.context.redis.pipeline(transaction=False)
        written = 0
        for ticker in tickers:
            instrument_id = self._by_ticker.get(id(ticker))
            if instrument_id is None:
                continue
            line = self.held[instrument_id]
            at = ticker.time.astimezone(UTC) if isinstance(ticker.time, datetime) else datetime.now(UTC)
            values = {
                "bid": _number(ticker.bid),
                "ask": _number(ticker.ask),
                "last": _number(ticker.last),
                "bid_size": _number(ticker.bidSize),
                "ask_size": _number(ticker.askSize),
                "last_size": _number(ticker.lastSize),
            }
            if values["bid"] is None and values["ask"] is None and values["last"] is None:
                continue
            last = values.pop("last")
            if last is not None:  # P&L marks at the last trade; a quote without one is not cached
                last_price_set(
                    client=pipe, instrument_id=instrument_id, price=LastPrice(last=last, at=at, source="ib", **values)
                )
            tick = {name: "" if value is None else str(value) for name, value in values.items()}
            tick |= {
                "instrument_id": instrument_id,
                "symbol": line.wanted.symbol,
                "con_id": str(line.wanted.con_id or ""),
                "last": "" if last is None else str(last),
                "at": at.isoformat().replace("+00:00", "Z"),
            }
            pipe.xadd(L1_STREAM, tick, maxlen=self.l1_maxlen, approximate=True)  # type: ignore[arg-type]
            written += 1
        if written:
            self.ticks += written
            self._write(pipe.execute)

    def _write(self, function: Any) -> None:
        # Redis writes leave the event loop for the writer thread, in order (last write wins).
        with contextlib.suppress(RuntimeError):  # the gateway is stopping: nothing more to cache
            self._writer.submit(_quietly, function)


def _quietly(function: Any) -> None:
    # A cache write that fails is not retried: the next tick carries a fresher value anyway.
    try:
        function()
    except redis.RedisError as exc:
        log.warning("ib.market_data_write_failed: %s", exc)
