"""The subscription API: idempotent subscribe, the shared line budget, unsubscribe, the last quote."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from django.db import connection
from django.test import override_settings

from apps.audit.models import AuditLog
from apps.common.context import Actor
from apps.common.errors import StateConflict
from apps.common.redis import get_redis
from apps.events.prices import FEED_CONTROL, FEED_LINES, FEED_SENTINEL, FEED_WANTED, LastPrice, last_price_set
from apps.marketdata import services
from apps.marketdata.models import MarketDataSubscription
from apps.tenants.scopes import Role
from tests.conftest import make_member

pytestmark = pytest.mark.django_db
REASON_101 = "IB error 101: Max number of tickers has been reached"


def wanted() -> dict[str, dict[str, Any]]:
    raw = get_redis().hgetall(FEED_WANTED)
    return {k.decode(): orjson.loads(v) for k, v in raw.items() if k.decode() != FEED_SENTINEL}


def subscribe(member: Any, symbol: str, capture: Any) -> Any:
    with capture(execute=True):
        return member.api.post("/marketdata/subscriptions", {"symbol": symbol})


def test_subscribe_creates_then_is_idempotent_and_publishes_union(
    trader, instruments, django_capture_on_commit_callbacks
):
    first = subscribe(trader, "aapl", django_capture_on_commit_callbacks)
    assert first.status_code == 201, first.json_body
    body = first.json_body
    aapl = instruments["AAPL"]
    assert body["symbol"] == "AAPL"
    assert body["instrument_id"] == str(aapl.id)
    assert body["con_id"] == 265598
    assert body["created_by"] == str(trader.user.id)
    assert body["line"] == {"state": "PENDING", "reason": None, "updated_at": None}
    again = subscribe(trader, "AAPL", django_capture_on_commit_callbacks)
    assert again.status_code == 200
    assert again.json_body["id"] == body["id"]
    assert MarketDataSubscription.objects.filter(tenant=trader.tenant).count() == 1
    assert AuditLog.objects.filter(action="marketdata.subscription.create").count() == 1
    assert wanted() == {
        str(aapl.id): {
            "symbol": "AAPL",
            "con_id": 265598,
            "exchange": "NASDAQ",
            "currency": "USD",
            "since": wanted()[str(aapl.id)]["since"],
        }
    }
    assert get_redis().xlen(FEED_CONTROL) == 1  # the replay published nothing


def test_two_tenants_share_one_line_in_the_union(trader, other_tenant, instruments, django_capture_on_commit_callbacks):
    other = make_member(other_tenant, Role.TRADER)
    assert subscribe(trader, "AAPL", django_capture_on_commit_callbacks).status_code == 201
    assert subscribe(other, "AAPL", django_capture_on_commit_callbacks).status_code == 201
    assert subscribe(other, "MSFT", django_capture_on_commit_callbacks).status_code == 201
    assert set(wanted()) == {str(instruments["AAPL"].id), str(instruments["MSFT"].id)}
    listed = trader.api.get("/marketdata/subscriptions").json_body
    assert [item["symbol"] for item in listed["items"]] == ["AAPL"]  # only this tenant's
    assert listed["next"] is None


@override_settings(MARKETDATA_LINES_PER_LOGIN=2)
def test_new_line_beyond_budget_is_409_and_nothing_changes(
    trader, other_tenant, instruments, django_capture_on_commit_callbacks
):
    other = make_member(other_tenant, Role.TRADER)
    assert subscribe(trader, "AAPL", django_capture_on_commit_callbacks).status_code == 201
    assert subscribe(other, "MSFT", django_capture_on_commit_callbacks).status_code == 201
    refused = subscribe(trader, "AMZN", django_capture_on_commit_callbacks)
    assert refused.status_code == 409
    assert refused.json_body["code"] == "STATE_CONFLICT"
    assert refused.json_body["message"] == (
        "Market data line budget exhausted: 2 of 2 IB lines are in use, and AMZN would need a new one"
    )
    assert refused.json_body["details"] == {"symbol": "AMZN", "lines_in_use": 2, "lines_budget": 2}
    assert MarketDataSubscription.objects.count() == 2
    assert len(wanted()) == 2
    # An instrument that already has a line costs nothing: still accepted at a full budget.
    assert subscribe(trader, "MSFT", django_capture_on_commit_callbacks).status_code == 201


def test_unsubscribe_by_id_and_by_symbol_removes_from_the_union(
    trader, other_tenant, instruments, django_capture_on_commit_callbacks
):
    other = make_member(other_tenant, Role.TRADER)
    mine = subscribe(trader, "AAPL", django_capture_on_commit_callbacks).json_body
    subscribe(other, "AAPL", django_capture_on_commit_callbacks)
    subscribe(trader, "MSFT", django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        assert trader.api.delete(f"/marketdata/subscriptions/{mine['id']}").status_code == 204
    assert str(instruments["AAPL"].id) in wanted()  # the other tenant still wants it
    with django_capture_on_commit_callbacks(execute=True):
        assert trader.api.delete("/marketdata/subscriptions?symbol=msft").status_code == 204
    assert set(wanted()) == {str(instruments["AAPL"].id)}
    gone = trader.api.delete(f"/marketdata/subscriptions/{mine['id']}")
    assert gone.status_code == 404
    assert gone.json_body["code"] == "NOT_FOUND"
    assert trader.api.delete("/marketdata/subscriptions?symbol=MSFT").status_code == 404
    assert AuditLog.objects.filter(action="marketdata.subscription.delete").count() == 2


def test_bad_requests_get_the_envelope(trader, instruments):
    unknown = trader.api.post("/marketdata/subscriptions", {"symbol": "NOPE"})
    assert unknown.status_code == 422
    assert unknown.json_body["details"] == {"symbol": ["no active instrument NOPE"]}
    extra = trader.api.post("/marketdata/subscriptions", {"symbol": "AAPL", "lines": 3})
    assert extra.status_code == 422
    assert extra.json_body["details"] == {"lines": ["unknown field"]}
    no_symbol = trader.api.delete("/marketdata/subscriptions")
    assert no_symbol.status_code == 422
    assert trader.api.get("/marketdata/subscriptions?limit=0").status_code == 422
    assert MarketDataSubscription.objects.count() == 0


def test_list_shows_the_gateways_line_state(trader, instruments, django_capture_on_commit_callbacks):
    subscribe(trader, "AAPL", django_capture_on_commit_callbacks)
    aapl = str(instruments["AAPL"].id)
    get_redis().hset(
        FEED_LINES,
        aapl,
        orjson.dumps({"state": "REFUSED", "reason": REASON_101, "at": "2026-11-22T08:00:00Z"}),
    )
    (item,) = trader.api.get("/marketdata/subscriptions?symbol=AAPL").json_body["items"]
    assert item["line"] == {
        "state": "REFUSED",
        "reason": REASON_101,
        "updated_at": "2026-11-22T08:00:00Z",
    }


def test_last_quote_from_the_cache_or_404(viewer, instruments):
    missing = viewer.api.get("/marketdata/AAPL/last")
    assert missing.status_code == 404
    assert missing.json_body["code"] == "NOT_FOUND"
    assert missing.json_body["message"] == "No quote for AAPL yet"
    at = datetime(2026, 11, 22, 14, 30, 1, 250000, tzinfo=UTC)
    price = LastPrice(
        last=Decimal("190.01"),
        bid=Decimal("190.00"),
        ask=Decimal("190.02"),
        bid_size=Decimal("300"),
        ask_size=Decimal("200"),
        at=at,
        source="ib",
        last_size=Decimal("100"),
    )
    last_price_set(client=get_redis(), instrument_id=instruments["AAPL"].id, price=price)
    quote = viewer.api.get("/marketdata/aapl/last")
    assert quote.status_code == 200
    assert quote.json_body == {
        "symbol": "AAPL",
        "instrument_id": str(instruments["AAPL"].id),
        "bid": "190.00",
        "ask": "190.02",
        "last": "190.01",
        "bid_size": "300",
        "ask_size": "200",
        "last_size": "100",
        "at": "2026-11-22T14:30:01.250000Z",
        "source": "ib",
    }
    assert viewer.api.get("/marketdata/NOPE/last").status_code == 404


@pytest.mark.django_db(transaction=True)
@override_settings(MARKETDATA_LINES_PER_LOGIN=1)
def test_concurrent_subscriptions_to_new_instruments_take_the_last_line_once(tenant, instruments):
    actor = Actor.system("test")
    results: list[str] = []
    barrier = threading.Barrier(2)

    def attempt(symbol: str) -> None:
        barrier.wait()
        try:
            services.subscription_create(tenant=tenant, actor=actor, symbol=symbol)
            results.append("ok")
        except StateConflict:
            results.append("conflict")
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(symbol,)) for symbol in ("AAPL", "MSFT")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(results) == ["conflict", "ok"]
    assert MarketDataSubscription.objects.count() == 1
