"""Redis Streams helpers: the stream names, and a consumer over a consumer group.

Consumers tolerate duplicates (the relay may publish an outbox row twice, e.g. after Redis lost
its data): every entry carries the outbox id (`id`), which is the deduplication key.
"""

from __future__ import annotations

import time
from typing import Any

import redis

ORDERS = "ev.orders"
POSITIONS = "ev.positions"
BROKERS = "ev.brokers"
RISK = "ev.risk"
# Broker events (spec 000's `ib:events`): what connectors (the IB gateway, the paper broker) report.
BROKER_EVENTS = "ib:events"

Entry = tuple[str, dict[str, str]]


def tenant_stream(tenant_id: Any) -> str:
    """The stream of every domain event of one tenant (what `/events/stream` reads)."""
    return f"ev.tenant.{tenant_id}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_entry(entry_id: Any, fields: dict[Any, Any]) -> Entry:
    return _text(entry_id), {_text(key): _text(value) for key, value in fields.items()}


class StreamConsumer:
    """One consumer of a consumer group: reads new entries and reclaims those another consumer left.

    `read` first claims entries idle longer than `claim_idle_ms` (their consumer died before
    acking) with XAUTOCLAIM, then reads new ones; callers `ack` what they processed. With
    `claim_every` (seconds), the claim is made at most that often instead of before every read
    (a busy consumer saves a round trip per read), and always while it still finds entries.
    """

    def __init__(
        self,
        *,
        client: redis.Redis,
        stream: str,
        group: str,
        consumer: str,
        claim_idle_ms: int = 30_000,
        claim_every: float = 0.0,
    ) -> None:
        self.client, self.stream, self.group, self.consumer = client, stream, group, consumer
        self.claim_idle_ms, self.claim_every = claim_idle_ms, claim_every
        self._claim_cursor = "0-0"
        self._next_claim = 0.0

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, *, count: int = 100, block_ms: int | None = 1000) -> list[Entry]:
        if not self.claim_every or time.monotonic() >= self._next_claim:
            claimed = self.client.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=self.claim_idle_ms,
                start_id=self._claim_cursor,
                count=count,
            )
            self._claim_cursor = _text(claimed[0])
            entries = [decode_entry(entry_id, fields) for entry_id, fields in claimed[1] if fields]
            if entries:
                return entries  # and claim again next time: there may be more
            self._next_claim = time.monotonic() + self.claim_every
        response = self.client.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms)
        return [decode_entry(entry_id, fields) for _, items in response or [] for entry_id, fields in items]

    def ack(self, *entry_ids: str) -> int:
        return int(self.client.xack(self.stream, self.group, *entry_ids)) if entry_ids else 0


class MultiStreamConsumer:
    """One consumer of the same group on several streams (a broker's command streams, one per account).

    Streams can be added while it runs. `read` blocks on all of them at once (one XREADGROUP), and
    every `claim_every` seconds first reclaims entries another consumer left unacknowledged.
    """

    def __init__(
        self, *, client: redis.Redis, group: str, consumer: str, claim_idle_ms: int = 30_000, claim_every: float = 5.0
    ) -> None:
        self.client, self.group, self.consumer = client, group, consumer
        self.claim_idle_ms, self.claim_every = claim_idle_ms, claim_every
        self._consumers: dict[str, StreamConsumer] = {}
        self._next_claim = 0.0

    @property
    def streams(self) -> list[str]:
        return list(self._consumers)

    def add(self, stream: str) -> None:
        if stream in self._consumers:
            return
        member = StreamConsumer(
            client=self.client,
            stream=stream,
            group=self.group,
            consumer=self.consumer,
            claim_idle_ms=self.claim_idle_ms,
        )
        member.ensure_group()
        self._consumers[stream] = member

    def remove(self, stream: str) -> None:
        self._consumers.pop(stream, None)

    def read(self, *, count: int = 100, block_ms: int | None = 1000, now: float = 0.0) -> list[tuple[str, Entry]]:
        """New (or reclaimed) entries of every stream, as (stream, (entry id, fields))."""
        if not self._consumers:
            return []
        if now >= self._next_claim:
            self._next_claim = now + self.claim_every
            claimed = [
                (stream, entry)
                for stream, member in self._consumers.items()
                for entry in member.read(count=count, block_ms=None)
            ]
            if claimed:
                return claimed
        response = self.client.xreadgroup(
            self.group, self.consumer, dict.fromkeys(self._consumers, ">"), count=count, block=block_ms
        )
        return [
            (_text(stream), decode_entry(entry_id, fields))
            for stream, items in response or []
            for entry_id, fields in items
        ]

    def ack(self, stream: str, *entry_ids: str) -> int:
        member = self._consumers.get(stream)
        return member.ack(*entry_ids) if member is not None else 0
