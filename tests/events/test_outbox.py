"""The outbox relay, Redis data loss, the consumer helper, command envelopes and /events/tail."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from apps.events import commands
from apps.events.models import OutboxEvent
from apps.events.relay import MARKER_KEY, relay_pending
from apps.events.services import outbox_emit
from apps.events.streams import BROKER_EVENTS, StreamConsumer


def emit(n: int, tenant_id=None, stream="ev.orders"):
    return [
        outbox_emit(tenant_id=tenant_id, stream=stream, kind="order.created", payload={"n": i}, aggregate_id=i)
        for i in range(n)
    ]


@pytest.mark.django_db
def test_relay_publishes_in_order_and_marks_published(redis_client):
    emit(3)
    assert relay_pending(client=redis_client) == 3
    entries = redis_client.xrange("ev.orders")
    assert [orjson.loads(fields[b"payload"])["n"] for _, fields in entries] == [0, 1, 2]
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()
    assert relay_pending(client=redis_client) == 0
    assert len(redis_client.xrange("ev.orders")) == 3


@pytest.mark.django_db
def test_relay_republishes_after_redis_lost_its_data(redis_client):
    emit(2)
    relay_pending(client=redis_client)
    redis_client.flushdb()  # Redis restarted without persistence
    emit(1)
    assert relay_pending(client=redis_client) == 3
    seqs = [int(fields[b"seq"]) for _, fields in redis_client.xrange("ev.orders")]
    assert seqs == sorted(seqs)
    assert len(seqs) == 3
    assert redis_client.exists(MARKER_KEY)


@pytest.mark.django_db
def test_rolled_back_events_are_never_published(redis_client):
    from django.db import transaction

    def write_then_fail() -> None:
        with transaction.atomic():
            emit(1)
            raise RuntimeError("rollback")

    with pytest.raises(RuntimeError):
        write_then_fail()
    assert relay_pending(client=redis_client) == 0


def test_consumer_reclaims_stale_entries(redis_client):
    redis_client.xadd("ev.test", {"id": "a"})
    first = StreamConsumer(client=redis_client, stream="ev.test", group="g", consumer="c1", claim_idle_ms=0)
    first.ensure_group()
    first.ensure_group()  # idempotent
    (entry,) = first.read(block_ms=None)
    # c1 died before acking: c2 claims it.
    second = StreamConsumer(client=redis_client, stream="ev.test", group="g", consumer="c2", claim_idle_ms=0)
    (claimed,) = second.read(block_ms=None)
    assert claimed == entry
    assert second.ack(claimed[0]) == 1
    assert second.read(block_ms=None) == []


def test_envelope_signature_staleness_and_replay(redis_client, settings):
    envelope = commands.envelope_sign(kind="oms.submit", payload={"orders": []})
    assert commands.envelope_verify(envelope, client=redis_client) == {"orders": []}
    with pytest.raises(commands.EnvelopeRejected, match="replayed nonce"):
        commands.envelope_verify(envelope, client=redis_client)
    forged = {**commands.envelope_sign(kind="oms.cancel", payload={"a": 1}), "payload": {"a": 2}}
    with pytest.raises(commands.EnvelopeRejected, match="bad signature"):
        commands.envelope_verify(forged, client=redis_client)
    old = commands.envelope_sign(kind="oms.modify", payload={}, now=time.time() - 3600)
    with pytest.raises(commands.EnvelopeRejected, match="stale timestamp"):
        commands.envelope_verify(old, client=redis_client)


def test_events_tail_filters_and_tenancy(viewer, other_tenant, redis_client):
    tenant_id = str(viewer.tenant.id)
    for index, kind in enumerate(["oms.submit", "ib.order_received", "ib.order_received"]):
        redis_client.xadd(
            BROKER_EVENTS,
            {"tenant_id": tenant_id, "kind": kind, "msg_id": "m1", "order_index": index, "data": '{"x": 1}'},
        )
    redis_client.xadd(BROKER_EVENTS, {"tenant_id": str(other_tenant.id), "kind": "oms.submit", "msg_id": "m1"})
    items = viewer.api.get("/events/tail").json_body["items"]
    assert [(i["kind"], i["order_index"]) for i in items] == [
        ("ib.order_received", 2),
        ("ib.order_received", 1),
        ("oms.submit", 0),
    ]
    assert items[0]["data"] == {"x": 1}
    one = viewer.api.get("/events/tail?msg_id=m1&order_index=1&kind=ib.order_received&limit=5").json_body["items"]
    assert [i["order_index"] for i in one] == [1]
    assert viewer.api.get(f"/events/tail?msg_id={uuid.uuid4().hex}").json_body["items"] == []
    assert viewer.api.get("/events/tail?limit=0").status_code == 422
    assert viewer.api.get("/events/tail?bogus=1").status_code == 422


@pytest.mark.django_db(transaction=True)
def test_run_relay_wakes_on_notify(redis_client):
    import threading

    from django.db import connection

    from apps.events.management.commands.run_relay import Command

    command = Command()

    def run() -> None:
        try:
            command.serve(poll=30.0)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    emit(1)  # autocommit: committed at once, NOTIFY delivered
    while not redis_client.xrange("ev.orders") and time.monotonic() - started < 5:
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    command.running = False
    emit(1, stream="ev.wake")  # wake the loop so it sees running=False
    thread.join(timeout=5)
    assert len(redis_client.xrange("ev.orders")) == 1
    assert elapsed < 2, "published on NOTIFY, not on the 30 s safety sweep"


@pytest.mark.django_db
def test_the_relay_seals_audit_entries_at_most_every_second_and_when_idle(redis_client):
    from apps.audit.models import UNSEALED, AuditLog
    from apps.audit.services import audit_record
    from apps.common.context import Actor
    from apps.events import relay

    def entry() -> AuditLog:
        return audit_record(tenant_id=None, actor=Actor.system("test"), action="thing.done", resource_type="thing")

    def position(audit: AuditLog) -> int:
        return AuditLog.objects.get(id=audit.id).position

    relay._last_seal[0] = 0.0
    first = entry()
    emit(1)
    assert relay_pending(client=redis_client) == 1
    assert position(first) > UNSEALED  # sealed with the publication
    second = entry()
    emit(1)
    assert relay_pending(client=redis_client) == 1
    assert position(second) == UNSEALED  # under load: not again within the second
    assert relay_pending(client=redis_client) == 0
    assert position(second) == position(first) + 1  # the idle sweep seals what is left
