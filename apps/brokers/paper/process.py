"""The paper broker's loop: commands in (verified, deduplicated), broker events out, prices stepped.

One process serves every `PAPER` account (their books share liquidity, as one market would). It
reads the accounts' command streams in the consumer group `paper-broker`, acts on the commands of
a read, and publishes the resulting broker events on `ib:events` and acknowledges the commands in
one MULTI/EXEC: a crash before it redelivers them, and the per-order dedupe key makes the
redelivery harmless.

Working orders survive a restart: every order an event touches is written to the Redis hash
`paper:working` (or removed from it once done) in the same MULTI/EXEC transaction as the events
and the submission's dedupe key, so what was kept and what the OMS was told never disagree. On
start the process takes those orders back (with what they had filled and how many executions
they had, so exec ids `<order id>.<n>` go on from the last one: nothing fills twice) before it
reads a command. Stops keep their trigger and trailing stops their level: the venue reports those
changes (`PaperVenue.changed`), which have no broker event, and they are kept the same way.

Prices: an instrument whose last-price cache entry was written by a real feed in the last minute
trades against that quote; otherwise the paper broker walks its own seeded path from the last
known price and writes it to the cache (source `paper`) so positions are marked. The market is
treated as open around the clock; DAY orders expire and MOC / LOC orders trade at 16:00 New York
time on weekdays.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import redis
import structlog
from django.conf import settings
from django.db import close_old_connections, connection

from apps.brokers.ib import wire
from apps.brokers.ibsim.catalogue import Catalogue
from apps.brokers.matching import Quote
from apps.brokers.models import Broker, BrokerAccount, Instrument
from apps.brokers.paper.venue import PaperOrder, PaperVenue, order_spec
from apps.brokers.paper.walk import Listing, RandomWalk
from apps.brokers.services import broker_account_heartbeat
from apps.events.commands import EnvelopeRejected, command_stream, envelope_verify
from apps.events.prices import LastPrice, last_price_set, last_prices
from apps.events.streams import BROKER_EVENTS, MultiStreamConsumer

log = structlog.get_logger("oms.paper")
GROUP = "paper-broker"
SOURCE = "paper"
SEEN_TTL_SECONDS = 7 * 24 * 3600
WORKING = "paper:working"  # hash: order id -> JSON of `PaperVenue.working`
FEED_FRESH = timedelta(seconds=60)
NEW_YORK = ZoneInfo("America/New_York")
CLOSE_HOUR = 16
DEFAULT_PRICE = Decimal(100)


def fresh_connection() -> None:
    """Drop a database connection that broke or aged out while we waited on Redis (never inside a transaction)."""
    if not connection.in_atomic_block:
        close_old_connections()


@dataclass
class PaperBroker:
    """State of one paper broker process (see the module docstring)."""

    client: redis.Redis
    consumer: str = "paper-1"
    tick_seconds: float = 0.25
    refresh_seconds: float = 5.0
    seed: int = 42
    venue: PaperVenue = field(default_factory=PaperVenue)
    walk: RandomWalk = field(init=False)
    accounts: dict[str, str] = field(default_factory=dict)  # account id -> tenant id
    listings: dict[str, Listing] = field(default_factory=dict)
    currencies: dict[str, str] = field(default_factory=dict)
    catalogue: Catalogue = field(default_factory=Catalogue)
    reader: MultiStreamConsumer = field(init=False)
    last_close: date | None = None
    restored: bool = False
    _seen: list[str] = field(default_factory=list)  # submissions taken, marked with their events
    _next_refresh: float = 0.0
    _next_tick: float = 0.0

    def __post_init__(self) -> None:
        self.walk = RandomWalk(seed=self.seed)
        self.reader = MultiStreamConsumer(client=self.client, group=GROUP, consumer=self.consumer)
        local = datetime.now(NEW_YORK)
        # Started after today's close: today's auction is not run late.
        self.last_close = local.date() if local.hour >= CLOSE_HOUR else None

    # -- the loop --------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the consumer groups (after a Redis error they may be gone with Redis's data)."""
        self.reader = MultiStreamConsumer(client=self.client, group=GROUP, consumer=self.consumer)
        self.accounts = {}
        self._seen = []
        self._next_refresh = 0.0

    def run_once(self, *, block_ms: int | None = None) -> int:
        """One turn: refresh accounts when due, handle waiting commands, step prices when due."""
        monotonic = time.monotonic()
        if monotonic >= self._next_refresh:
            self._next_refresh = monotonic + self.refresh_seconds
            self.refresh_accounts()
        if not self.restored:
            self.publish(self.restore())
            self.restored = True
        wait = block_ms if block_ms is not None else max(1, int((self._next_tick - monotonic) * 1000))
        entries = self.reader.read(count=100, block_ms=wait, now=monotonic)
        if entries:
            # What a read returned is handled, then published and acknowledged in one MULTI/EXEC:
            # a crash before it redelivers the lot (deduplicated), none after it can.
            events: list[wire.WireEvent | dict[str, str]] = []
            taken: dict[str, list[str]] = {}
            for stream, (entry_id, fields) in entries:
                events += self.handle(stream, entry_id, fields)
                taken.setdefault(stream, []).append(entry_id)
            self.publish(events, acks=taken)
        handled = len(entries)
        if time.monotonic() >= self._next_tick:
            self._next_tick = time.monotonic() + self.tick_seconds
            self.publish(self.step_prices(datetime.now(UTC)))
        return handled

    def refresh_accounts(self) -> None:
        """Follow the PAPER accounts (new ones start being served) and refresh their heartbeats."""
        fresh_connection()
        rows = BrokerAccount.objects.filter(broker=Broker.PAPER).values_list("id", "tenant_id")
        current = {str(account_id): str(tenant_id) for account_id, tenant_id in rows}
        for account_id in set(self.accounts) - set(current):
            self.reader.remove(command_stream(account_id))
        for account_id in current:
            self.reader.add(command_stream(account_id))
            broker_account_heartbeat(account_id=account_id)
        self.accounts = current

    # -- commands --------------------------------------------------------------------------------

    def handle(self, stream: str, entry_id: str, fields: dict[str, str]) -> list[wire.WireEvent | dict[str, str]]:
        """Act on one command entry; return what to publish (broker events, or a rejection record)."""
        account_id = stream.removeprefix("cmd.")
        tenant_id = self.accounts.get(account_id, "")
        try:
            envelope = orjson.loads(fields.get("envelope", ""))
            if not isinstance(envelope, dict):
                raise EnvelopeRejected("envelope is not an object")
            payload = envelope_verify(envelope, client=self.client)
            kind = str(envelope["kind"])
            if payload.get("account_id") != account_id:
                raise EnvelopeRejected(f"command for account {payload.get('account_id')} on {stream}")
            orders = [self._paper_order(item, tenant_id, account_id, payload) for item in payload.get("orders", [])]
        except (
            EnvelopeRejected,
            Instrument.DoesNotExist,
            orjson.JSONDecodeError,
            LookupError,
            ValueError,
            TypeError,
        ) as exc:
            reason = exc.reason if isinstance(exc, EnvelopeRejected) else f"malformed command: {exc!r}"
            log.warning("paper.command_rejected", stream=stream, entry=entry_id, reason=reason)
            return [self._rejection(tenant_id, account_id, entry_id, reason)]
        now = datetime.now(UTC)
        if kind == "oms.submit":
            return self._submit(orders, now=now)
        events: list[wire.WireEvent | dict[str, str]] = []
        for order in orders:
            if kind == "oms.cancel":
                events += self.venue.cancel(order.order_id, now=now)
            else:
                events += self.venue.modify(order, now=now)
        return events

    def _submit(self, orders: list[PaperOrder], *, now: datetime) -> list[wire.WireEvent | dict[str, str]]:
        # The OMS resends a submission it is not sure arrived; a second one for an order is ignored.
        # The mark is written with the submission's events (`publish`), so a crash before them forgets both.
        pipe = self.client.pipeline(transaction=False)
        for order in orders:
            pipe.exists(f"paper:order:{order.order_id}")
        known = pipe.execute()
        taken = set(self._seen)  # taken earlier in the same read, not yet marked in Redis
        fresh = [order for order, seen in zip(orders, known, strict=True) if not seen and order.order_id not in taken]
        self._seen += [order.order_id for order in fresh]
        events: list[wire.WireEvent | dict[str, str]] = []
        for order in fresh:
            if self.venue.quote(order.listing.key) is None:
                events += self.venue.set_quote(order.listing.key, self._quote(order.listing, now=now), now=now)
        events += self.venue.submit(fresh, now=now)
        return events

    def _paper_order(
        self, item: dict[str, Any], tenant_id: str, account_id: str, payload: dict[str, Any]
    ) -> PaperOrder:
        listing = self._listing(item)
        return PaperOrder(
            order_id=str(item["order_id"]),
            tenant_id=tenant_id,
            account_id=account_id,
            listing=listing,
            currency=self.currencies[listing.key],
            spec=order_spec(item),
            parent_id=item.get("parent_id") or None,
            oca_group=item.get("oca_group") or None,
            msg_id=str(payload.get("msg_id", "")),
            order_index=item.get("order_index"),
        )

    def _listing(self, item: dict[str, Any]) -> Listing:
        key = str(item.get("instrument_id") or "")
        if key in self.listings:
            return self.listings[key]
        fresh_connection()
        instruments = Instrument.objects.all()
        if key:
            instrument = instruments.get(id=key)
        elif item.get("con_id"):
            instrument = instruments.get(con_id=item["con_id"])
        else:
            instrument = instruments.get(symbol__iexact=item["symbol"])
        known = self.catalogue.get(instrument.con_id) if instrument.con_id else None
        listing = Listing(
            key=str(instrument.id),
            symbol=instrument.symbol,
            tick_size=instrument.tick_size,
            reference_price=known.reference_price if known is not None else DEFAULT_PRICE,
        )
        self.listings[listing.key] = listing
        self.currencies[listing.key] = instrument.currency
        return listing

    # -- restart ---------------------------------------------------------------------------------

    def restore(self, *, now: datetime | None = None) -> list[wire.WireEvent | dict[str, str]]:
        """Take back the working orders kept in `paper:working` by the previous process (see the module docstring)."""
        now = now or datetime.now(UTC)
        kept: list[tuple[PaperOrder, dict[str, Any]]] = []
        for raw in self.client.hvals(WORKING):
            row: dict[str, Any] = {}
            try:
                row = orjson.loads(raw)
                payload = {"msg_id": row.get("msg_id") or ""}
                order = self._paper_order(row, str(row["tenant_id"]), str(row["account_id"]), payload)
            except (Instrument.DoesNotExist, orjson.JSONDecodeError, LookupError, ValueError, TypeError) as exc:
                log.warning("paper.restore_skipped", order_id=row.get("order_id"), error=repr(exc))
                continue
            kept.append((order, row))
        events: list[wire.WireEvent | dict[str, str]] = []
        for listing in {order.listing.key: order.listing for order, _ in kept}.values():
            if self.venue.quote(listing.key) is None:
                events += self.venue.set_quote(listing.key, self._quote(listing, now=now), now=now)
        ids = {order.order_id for order, _ in kept}
        for order, row in sorted(kept, key=lambda pair: int(pair[1].get("sequence", -1))):
            self.venue.restore(
                order,
                filled=Decimal(str(row.get("filled", "0"))),
                notional=Decimal(str(row.get("notional", "0"))),
                executions=int(row.get("executions", 0)),
                parent_working=row.get("waits_for") in ids,
                triggered=bool(row.get("triggered")),
                trail_stop=Decimal(str(row["trail_stop"])) if row.get("trail_stop") else None,
            )
        if kept:
            log.info("paper.restored", orders=len(kept))
        return events

    # -- prices ----------------------------------------------------------------------------------

    def _feed_quote(self, cached: LastPrice | None, *, now: datetime) -> Quote | None:
        """A real feed's fresh quote from the cache, as the book's top of book."""
        if cached is None or cached.source == SOURCE or cached.at is None or now - cached.at > FEED_FRESH:
            return None
        bid, ask = cached.bid or cached.last, cached.ask or cached.last
        size = self.walk.liquidity
        return Quote(
            bid=bid, ask=ask, last=cached.last, bid_size=cached.bid_size or size, ask_size=cached.ask_size or size
        )

    def _quote(self, listing: Listing, *, now: datetime) -> Quote:
        cached = last_prices(client=self.client, instrument_ids=[listing.key]).get(listing.key)
        feed = self._feed_quote(cached, now=now)
        if feed is not None:
            return feed
        return self.walk.initial(listing, cached.last if cached is not None else None)

    def step_prices(self, now: datetime) -> list[wire.WireEvent | dict[str, str]]:
        """Move every known instrument one step (feed quote or walk), fill what crosses, mark the cache."""
        if not self.listings:
            return []
        cached = last_prices(client=self.client, instrument_ids=list(self.listings))
        events: list[wire.WireEvent | dict[str, str]] = []
        pipe = self.client.pipeline(transaction=False)
        for key, listing in self.listings.items():
            previous = self.venue.quote(key)
            feed = self._feed_quote(cached.get(key), now=now)
            quote = feed or (self.walk.step(listing, previous) if previous else self._quote(listing, now=now))
            events += self.venue.set_quote(key, quote, now=now)
            if feed is None:
                price = LastPrice(quote.last, quote.bid, quote.ask, quote.bid_size, quote.ask_size, now, SOURCE)
                last_price_set(client=pipe, instrument_id=key, price=price)
        pipe.execute()
        events += self._close_if_due(now)
        return events

    def _close_if_due(self, now: datetime) -> list[wire.WireEvent | dict[str, str]]:
        local = now.astimezone(NEW_YORK)
        if local.weekday() >= 5 or local.hour < CLOSE_HOUR or self.last_close == local.date():
            return []
        self.last_close = local.date()
        events: list[wire.WireEvent | dict[str, str]] = []
        for key in list(self.venue.books):
            quote = self.venue.quote(key)
            if quote is not None:
                events += self.venue.close_auction(key, quote.last, now=now)
        log.info("paper.closing_auction", date=str(local.date()), events=len(events))
        return events

    # -- output ----------------------------------------------------------------------------------

    def _rejection(self, tenant_id: str, account_id: str, entry_id: str, reason: str) -> dict[str, str]:
        return {
            "kind": "command.rejected",
            "tenant_id": tenant_id,
            "account_id": account_id,
            "order_id": "",
            "msg_id": "",
            "order_index": "",
            "at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "source": SOURCE,
            "data": orjson.dumps({"reason": reason, "command_entry": entry_id}).decode(),
        }

    def publish(
        self, events: list[wire.WireEvent | dict[str, str]], *, acks: Mapping[str, list[str]] | None = None
    ) -> None:
        """Publish events with the submissions' dedupe marks and the kept state of the orders they
        touch, and acknowledge the command entries (`acks`, by stream) they answer, at once."""
        if not events and not self._seen and not self.venue.changed and not acks:
            return
        pipe = self.client.pipeline(transaction=True)
        for stream, entry_ids in (acks or {}).items():
            pipe.xack(stream, GROUP, *entry_ids)
        for order_id in self._seen:
            pipe.set(f"paper:order:{order_id}", 1, ex=SEEN_TTL_SECONDS)
        touched: dict[str, None] = {}
        for event in events:
            if isinstance(event, dict):
                fields = event
            else:
                fields = {**wire.encode(event), "source": SOURCE}
                touched[event.order_id] = None
            pipe.xadd(BROKER_EVENTS, fields, maxlen=settings.EVENTS_STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
        touched.update(dict.fromkeys(self.venue.changed))
        for order_id in touched:
            kept = self.venue.working(order_id)
            if kept is None:
                pipe.hdel(WORKING, order_id)
            else:
                pipe.hset(WORKING, order_id, orjson.dumps(kept))
        pipe.execute()
        self._seen = []
        self.venue.changed.clear()
