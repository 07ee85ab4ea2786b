"""The gateway: one ib_async connection, kept alive, feeding IB with commands and the OMS with events.

The loop: connect (exponential backoff with jitter between attempts, a circuit breaker that stops
hammering a gateway that keeps failing and probes it again later), raise the order-id mark to IB's
`nextValidId` (never lower it), reconcile, and only then take commands. While connected, a
heartbeat (`reqCurrentTime`) proves the socket is alive; a socket that looks open but answers
nothing is dropped and reconnected. IB's own connectivity notices (1100 lost, 1101 restored with
data lost, 1102 restored) keep the socket: commands wait while IB is unreachable, and the return
is reconciled (1101 also resubscribes market data). Commands that arrive while the account is not
trading stay on their stream, unread: held, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from ib_async import IB
from ib_async.ib import StartupFetch

from apps.brokers.ib import store
from apps.brokers.ib.context import Context, GatewayConfig, log
from apps.brokers.ib.listener import Listener
from apps.brokers.ib.marketdata import MarketData
from apps.brokers.ib.models import RunTrigger
from apps.brokers.ib.resilience import Backoff, CircuitBreaker
from apps.brokers.ib.router import Router
from apps.brokers.ib.sync import Sync
from apps.brokers.models import BREAKER_HALT, ConnectionStatus
from apps.common.redis import get_redis
from apps.events.commands import command_stream
from apps.events.streams import StreamConsumer

COMMAND_GROUP = "ib-gateway"
# Not EXECUTIONS: the reconciliation that follows every connect asks for them (since its cursor).
# Far above any order id IB hands out and below 2**31 (IB's ids are 32-bit).
REQUEST_ID_BASE = 1_500_000_000
STARTUP_FETCH = StartupFetch.POSITIONS | StartupFetch.ORDERS_OPEN | StartupFetch.ORDERS_COMPLETE


class SessionEnded(Exception):
    """The IB session is over (socket closed, heartbeat lost); `reason` says why."""


@dataclass(frozen=True, slots=True)
class Served:
    """One broker account the gateway serves: its context (a view of the login's), command router,
    callback listener and reconciliation."""

    context: Context
    router: Router
    listener: Listener
    sync: Sync


class Gateway:
    """Serves broker accounts over one IB login (host, port, client id): one ib_async connection,
    one pacer and one heartbeat for the login; commands, callbacks, reconciliation and status per
    account (an IB financial-advisor or multi-account login lists them all in managedAccounts)."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        redis_client: redis.Redis | None = None,
        others: Sequence[GatewayConfig] = (),
    ) -> None:
        self.config = config
        self.context = Context(config, redis_client or get_redis())
        self.router = Router(self.context)
        self.listener = Listener(self.context, lookup=self._lookup)
        self.sync = Sync(self.context, self.router, self.listener)
        self.listener.on_connectivity = self._on_connectivity
        self.accounts = [Served(self.context, self.router, self.listener, self.sync)]
        for other in others:
            if (other.host, other.port, other.client_id) != (config.host, config.port, config.client_id):
                raise ValueError(f"account {other.account_code} is not on IB login {config.login}#{config.client_id}")
            self.accounts.append(self._served(self.context.view(other)))
        self.market_data = MarketData(self.context, lines=config.market_data_lines)
        self.listener.on_request_error = self.market_data.on_error
        self.backoff = Backoff(base=config.backoff_base, cap=config.backoff_cap)
        self.breaker = CircuitBreaker(threshold=config.breaker_threshold, open_seconds=config.breaker_open_seconds)
        self.trading = False
        self.connected_once = False
        self.last_heartbeat = 0.0
        self._stopping: asyncio.Event | None = None
        self._lost: asyncio.Event | None = None
        self._lost_reason = ""
        self._tasks: list[asyncio.Task[Any]] = []

    @staticmethod
    def _served(context: Context) -> Served:
        router = Router(context)
        syncs: list[Sync] = []
        listener = Listener(context, lookup=lambda ticket, code, text: syncs[0].order(ticket, code, text))
        syncs.append(Sync(context, router, listener))
        return Served(context, router, listener, syncs[0])

    # -- lifecycle -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the run loop to end (from the loop's thread; see `stop_threadsafe`)."""
        if self._stopping is not None:
            self._stopping.set()

    async def run(self) -> None:
        """Connect, serve, reconnect, until stopped."""
        self._stopping = asyncio.Event()
        context = self.context
        context.pacer.start()
        listener_tasks = [
            asyncio.create_task(served.listener.run(), name=f"ib-listener-{served.context.config.account_code}")
            for served in self.accounts
        ]
        try:
            while not self._stopping.is_set():
                if not self.breaker.allow():
                    wait = self.breaker.seconds_until_probe()
                    # HALTED: the gateway has stopped trying for now; new orders are held or refused
                    # per the account's setting, as while it is disconnected.
                    await self._status(
                        ConnectionStatus.HALTED,
                        f"{BREAKER_HALT} after {self.breaker.failures} failed connects; next probe in {wait:.0f} s",
                    )
                    await self._sleep(wait)
                    continue
                if not self.connected_once:
                    await self._status(ConnectionStatus.RECONNECTING, f"connecting to IB at {self.config.login}")
                try:
                    await self._connect()
                except (OSError, ConnectionError, TimeoutError) as exc:
                    self.breaker.record_failure()
                    delay = self.backoff.next_delay()
                    log.warning("ib.connect_failed %s: %s; retry in %.2f s", self.config.login, exc, delay)
                    self._teardown()
                    await self._sleep(delay)
                    continue
                self.breaker.record_success()
                self.backoff.reset()
                reason = await self._serve()
                self._teardown()
                if not self._stopping.is_set():
                    await self._status(ConnectionStatus.RECONNECTING, reason)
                    await self._sleep(self.backoff.next_delay())
        finally:
            self._teardown()
            for task in listener_tasks:
                task.cancel()
            await asyncio.gather(*listener_tasks, return_exceptions=True)
            await context.pacer.stop()
            self.market_data.close()
            with contextlib.suppress(Exception):
                await self._status(ConnectionStatus.DISCONNECTED, "gateway stopped")
            for served in reversed(self.accounts):  # the views first, the login's context last
                served.context.close()

    async def _sleep(self, seconds: float) -> None:
        assert self._stopping is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=max(seconds, 0.0))

    async def _status(self, status: ConnectionStatus, reason: str) -> None:
        """Report the login's connection status for every account it serves."""
        for served in self.accounts:
            account_id = served.context.config.account_id
            await self.context.db(store.account_status, account_id=account_id, status=status, reason=reason)

    # -- connection ----------------------------------------------------------------------------

    async def _connect(self) -> None:
        config, context = self.config, self.context
        ib = IB()
        ib.RequestTimeout = config.request_timeout
        ib.client.MaxRequests = 0  # our pacer throttles, with priorities; ib_async's would double-queue
        for served in self.accounts:
            served.listener.attach(ib)
        ib.disconnectedEvent += self._on_disconnected
        self.market_data.attach(ib)
        context.ib = ib
        self._lost = asyncio.Event()
        self._lost_reason = ""
        await ib.connectAsync(
            config.host,
            config.port,
            clientId=config.client_id,
            timeout=config.connect_timeout,
            account=config.account_code,
            fetchFields=STARTUP_FETCH,
        )
        context.next_valid_id = int(ib.client._reqIdSeq)
        # ib_async numbers its requests from nextValidId, the range our order-id leases hand out, and
        # IB reports an error by that one id: a market data error could pass for an order's. Requests
        # count from far above any order id instead.
        ib.client.updateReqId(REQUEST_ID_BASE)
        context.backend_up = True

    def _teardown(self) -> None:
        self.trading = False
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        dropped = self.context.pacer.clear()
        if dropped:
            log.warning("ib.unsent_dropped %d queued message(s); reconciliation resolves their orders", dropped)
        for served in self.accounts:
            served.router.unsent.clear()
        self.market_data.detach()
        ib, self.context.ib = self.context.ib, None
        if ib is not None:
            ib.disconnectedEvent -= self._on_disconnected
            with contextlib.suppress(Exception):
                ib.disconnect()

    def _on_disconnected(self) -> None:
        self._lose("IB closed the connection")

    def _lose(self, reason: str) -> None:
        if self._lost is not None and not self._lost.is_set():
            self._lost_reason = reason
            self._lost.set()

    async def _serve(self) -> str:
        """One connected session; return why it ended."""
        config, context = self.config, self.context
        assert self._lost is not None
        assert self._stopping is not None
        for served in self.accounts:
            served.router.session_sent.clear()
        mark = await context.db(
            store.order_id_floor, login=config.login, client_id=config.client_id, next_valid_id=context.next_valid_id
        )
        if mark >= context.next_valid_id:
            log.warning("ib.next_valid_id_behind: IB says %s, our mark is %s", context.next_valid_id, mark)
        try:
            for served in self.accounts:
                await served.sync.run(RunTrigger.RECONNECT)
            await self.market_data.connected()
        except (ConnectionError, TimeoutError) as exc:
            return f"reconciliation on connect failed: {exc!r}"
        self.connected_once = True
        self.trading = True
        self.last_heartbeat = time.monotonic()
        await self._status(ConnectionStatus.CONNECTED, f"connected to IB at {config.login}")
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name="ib-heartbeat"),
            *(
                asyncio.create_task(self._commands(served), name=f"ib-commands-{served.context.config.account_code}")
                for served in self.accounts
            ),
            asyncio.create_task(self._scheduled(), name="ib-schedule"),
            asyncio.create_task(self.market_data.run(), name="ib-market-data"),
        ]
        stopping = asyncio.create_task(self._stopping.wait())
        lost = asyncio.create_task(self._lost.wait())
        await asyncio.wait({stopping, lost}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        lost.cancel()
        return self._lost_reason or "stopping"

    # -- heartbeat and connectivity ------------------------------------------------------------

    async def _heartbeat(self) -> None:
        config, context = self.config, self.context
        while True:
            await asyncio.sleep(config.heartbeat_seconds)
            try:
                await context.pacer.request(context.ib.reqCurrentTimeAsync, timeout=config.heartbeat_timeout)
            except (TimeoutError, ConnectionError, AttributeError):
                # The socket may look open while nothing answers (a hung gateway, a dead NAT path).
                self._lose(f"heartbeat: no answer to reqCurrentTime within {config.heartbeat_timeout:.0f} s")
                return
            self.last_heartbeat = time.monotonic()
            if context.backend_up:
                for served in self.accounts:
                    await context.db(store.account_heartbeat, account_id=served.context.config.account_id)

    def _on_connectivity(self, code: int) -> None:
        if code == 1100:
            self.context.backend_up = False
            self.trading = False
            self._spawn(self._status(ConnectionStatus.RECONNECTING, "IB connectivity lost (1100); gateway socket kept"))
        else:
            self._spawn(self._restored(data_lost=code == 1101))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.append(task)

    async def _restored(self, *, data_lost: bool) -> None:
        self.context.backend_up = True
        if data_lost:
            await self.market_data.resubscribe()
        for served in self.accounts:
            await served.sync.run(RunTrigger.RECONNECT)
        self.trading = True
        notice = "1101, market data resubscribed" if data_lost else "1102"
        await self._status(ConnectionStatus.CONNECTED, f"IB connectivity restored ({notice})")

    # -- commands and scheduled work -----------------------------------------------------------

    async def _commands(self, served: Served) -> None:
        context = served.context
        config = context.config
        consumer = StreamConsumer(
            client=context.redis,
            stream=command_stream(config.account_id),
            group=COMMAND_GROUP,
            consumer=f"gw-{config.account_code}-{config.client_id}",
        )
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(context.reader, consumer.ensure_group)
        backlog = True  # first our own unacknowledged entries (a crash), then new ones
        while True:
            if not (self.trading and context.backend_up):
                await asyncio.sleep(0.1)
                continue
            if backlog:
                response = await loop.run_in_executor(
                    context.reader,
                    lambda: context.redis.xreadgroup(
                        COMMAND_GROUP, consumer.consumer, {consumer.stream: "0"}, count=100
                    ),
                )
                entries = [
                    (entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields)
                    for _, items in response or []
                    for entry_id, fields in items
                ]
                entries = [(entry_id, _text(fields)) for entry_id, fields in entries if fields]
                backlog = bool(entries)
                redelivered = True
            else:
                entries = await loop.run_in_executor(context.reader, lambda: consumer.read(count=50, block_ms=250))
                redelivered = False
            for entry_id, fields in entries:
                await served.router.handle_entry(fields, redelivered=redelivered)
                await loop.run_in_executor(context.reader, consumer.ack, entry_id)

    async def _scheduled(self) -> None:
        config, context = self.config, self.context
        next_run = time.monotonic() + config.reconcile_seconds
        while True:
            await asyncio.sleep(config.poll_seconds)
            if not (self.trading and context.backend_up):
                continue
            scheduled = time.monotonic() >= next_run
            for served in self.accounts:
                account_id = served.context.config.account_id
                run_id = await context.db(store.run_claim_requested, account_id=account_id)
                if run_id is not None:
                    await served.sync.run(RunTrigger.MANUAL, run_id=run_id)
                elif scheduled:
                    await served.sync.run(RunTrigger.SCHEDULE)
            if scheduled:
                next_run = time.monotonic() + config.reconcile_seconds

    async def _lookup(self, ticket: store.Ticket, code: int, text: str) -> None:
        await self.sync.order(ticket, code, text)

    async def cancel_all(self) -> int:
        """Cancel every working order of the account (for the kill switch)."""
        return await self.router.cancel_all()


def _text(fields: dict[Any, Any]) -> dict[str, str]:
    return {
        (key.decode() if isinstance(key, bytes) else str(key)): (
            value.decode() if isinstance(value, bytes) else str(value)
        )
        for key, value in fields.items()
    }
