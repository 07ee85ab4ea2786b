"""`/pnl/today`, the daily snapshot task and `/pnl/history`."""

from __future__ import annotations

from datetime import UTC, timedelta
from decimal import Decimal

from django.utils import timezone

from apps.audit.models import AuditLog
from apps.events.models import OutboxEvent
from apps.portfolio.models import PnlSnapshot
from apps.portfolio.tasks import pnl_snapshot_task
from tests.orders.conftest import make_account
from tests.portfolio.test_positions import set_price, trade


def test_pnl_today_sums_realized_and_marks_per_account_and_currency(
    tenant, manager, account, instruments, redis_client
):
    trade(manager, account, "BUY", "100", "10", "b1")
    trade(manager, account, "SELL", "50", "12", "s1")  # realises 50 * (12 - 10.01) - 1 = 98.5
    second = make_account(tenant, "PAPER2")
    trade(manager, second, "BUY", "10", "20", "b2", symbol="SPY")
    set_price(redis_client, instruments["AAPL"], "11")  # 50 * (11 - 10.01) = 49.5
    body = manager.api.get("/pnl/today").json_body
    assert body["date"] == timezone.now().astimezone(UTC).date().isoformat()
    by_account = {row["account_id"]: row for row in body["accounts"]}
    assert by_account[str(account.id)] == {
        "account_id": str(account.id),
        "currency": "USD",
        "realized_pnl": "98.5",
        "unrealized_pnl": "49.5",
        "total_pnl": "148",
        "open_positions": 1,
        "unpriced_positions": 0,
    }
    assert (by_account[str(second.id)]["unpriced_positions"], by_account[str(second.id)]["total_pnl"]) == (1, "0")
    assert body["total"] == [{"currency": "USD", "realized_pnl": "98.5", "unrealized_pnl": "49.5", "total_pnl": "148"}]
    only = manager.api.get(f"/pnl/today?account_id={second.id}").json_body
    assert [row["account_id"] for row in only["accounts"]] == [str(second.id)]


def test_snapshot_task_records_events_and_history_reads_them(manager, account, instruments, redis_client):
    trade(manager, account, "BUY", "100", "10", "b1")
    trade(manager, account, "SELL", "50", "12", "s1")
    set_price(redis_client, instruments["AAPL"], "11")
    assert pnl_snapshot_task.apply().get() == 1
    snapshot = PnlSnapshot.objects.get(account=account)
    assert (snapshot.realized_pnl, snapshot.unrealized_pnl, snapshot.open_positions) == (
        Decimal("98.5"),
        Decimal("49.5"),
        1,
    )
    assert OutboxEvent.objects.filter(kind="pnl.snapshot.created", aggregate_id=str(snapshot.id)).count() == 1
    set_price(redis_client, instruments["AAPL"], "12")
    assert pnl_snapshot_task.apply().get() == 1  # the same day again refreshes the row
    assert PnlSnapshot.objects.count() == 1
    assert PnlSnapshot.objects.get().unrealized_pnl == Decimal("99.5")
    assert OutboxEvent.objects.filter(kind="pnl.snapshot.updated").count() == 1
    assert AuditLog.objects.filter(action="pnl.snapshot").count() == 2
    today = timezone.now().astimezone(UTC).date()
    history = manager.api.get(f"/pnl/history?from={today - timedelta(days=3)}&to={today}").json_body
    assert [item["date"] for item in history["items"]] == [today.isoformat()]
    day = history["items"][0]
    assert [(row["realized_pnl"], row["unrealized_pnl"], row["total_pnl"]) for row in day["accounts"]] == [
        ("98.5", "99.5", "198")
    ]
    assert day["total"] == [{"currency": "USD", "realized_pnl": "98.5", "unrealized_pnl": "99.5", "total_pnl": "198"}]
    assert manager.api.get("/pnl/history").json_body["items"][0]["date"] == today.isoformat()
    yesterday = manager.api.get(f"/pnl/history?from={today - timedelta(days=3)}&to={today - timedelta(days=1)}")
    assert yesterday.json_body["items"] == []


def test_history_refuses_bad_ranges(manager):
    for query in ("from=2026-02-01&to=2026-01-01", "from=2024-01-01&to=2026-01-01", "from=yesterday", "since=1"):
        response = manager.api.get(f"/pnl/history?{query}")
        assert (response.status_code, response.json_body["code"]) == (422, "VALIDATION_ERROR"), query


def test_viewer_without_grant_sees_no_pnl(tenant, manager, viewer, account):
    trade(manager, account, "BUY", "1", "10", "v1")
    assert viewer.api.get("/pnl/today").json_body["accounts"] == []
    assert viewer.api.get("/positions").json_body["items"] == []
