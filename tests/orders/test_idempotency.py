"""Idempotency-Key: replay, conflict, expiry, purge, and 50 concurrent requests over real HTTP."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from apps.orders.models import IdempotencyRecord, Order
from apps.orders.services.idempotency import idempotency_purge
from tests.orders.conftest import order_body


def test_same_key_same_payload_replays_original(granted_trader, account):
    first = granted_trader.api.post("/orders", order_body(account), headers={"Idempotency-Key": "k1"})
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first
    Order.objects.filter(id=first.json_body["id"]).update(state="CANCELED")
    again = granted_trader.api.post("/orders", order_body(account), headers={"Idempotency-Key": "k1"})
    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json_body == first.json_body
    assert Order.objects.count() == 1


def test_same_key_other_payload_is_409(granted_trader, account):
    granted_trader.api.post("/orders", order_body(account), headers={"Idempotency-Key": "k1"})
    response = granted_trader.api.post("/orders", order_body(account, quantity="5"), headers={"Idempotency-Key": "k1"})
    assert response.status_code == 409
    assert response.json_body["code"] == "IDEMPOTENT_REPLAY"
    assert Order.objects.count() == 1


def test_refused_request_does_not_burn_the_key(granted_trader, account):
    bad = granted_trader.api.post("/orders", order_body(account, limit_price="1.001"), headers={"Idempotency-Key": "k"})
    assert bad.status_code == 422
    assert not IdempotencyRecord.objects.exists()
    assert granted_trader.api.post("/orders", order_body(account), headers={"Idempotency-Key": "k"}).status_code == 201


def test_keys_are_per_tenant_and_expire(granted_trader, account, other_tenant):
    granted_trader.api.post("/orders", order_body(account), headers={"Idempotency-Key": "k1"})
    IdempotencyRecord.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    fresh = granted_trader.api.post("/orders", order_body(account, quantity="7"), headers={"Idempotency-Key": "k1"})
    assert fresh.status_code == 201
    assert "Idempotent-Replayed" not in fresh
    assert Order.objects.count() == 2
    IdempotencyRecord.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert idempotency_purge() == 1
    assert not IdempotencyRecord.objects.exists()


def test_key_longer_than_255_is_422(granted_trader, account):
    response = granted_trader.api.post("/orders", order_body(account), headers={"Idempotency-Key": "k" * 256})
    assert response.status_code == 422
    assert not Order.objects.exists()


def test_batch_replays_whole_result(granted_trader, account):
    body = {"orders": [order_body(account), order_body(account, limit_price="0.001")]}
    first = granted_trader.api.post("/orders/batch", body, headers={"Idempotency-Key": "b1"})
    again = granted_trader.api.post("/orders/batch", body, headers={"Idempotency-Key": "b1"})
    assert again["Idempotent-Replayed"] == "true"
    assert again.json_body == first.json_body
    assert Order.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_requests_with_one_key_create_one_order(live_server, granted_trader, account):
    url = f"{live_server.url}/api/v1/orders"
    headers = {"Authorization": f"Bearer {granted_trader.access}", "Idempotency-Key": "burst-1"}
    body = order_body(account)

    def post(_: int) -> httpx.Response:
        with httpx.Client(timeout=30) as client:
            return client.post(url, json=body, headers=headers)

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(post, range(50)))
    assert [r.status_code for r in responses] == [201] * 50, [r.text for r in responses if r.status_code != 201][:3]
    assert Order.objects.count() == 1
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 49
