"""Risk through the orders API: denials, preview, overrides, rate limit, kill switch, the race."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import orjson
import pytest
from django.utils import timezone

from apps.audit.models import AuditLog
from apps.common.redis import get_redis
from apps.events.relay import relay_pending
from apps.events.streams import RISK, StreamConsumer
from apps.orders.management.commands.run_risk_actions import act_on_entries
from apps.orders.models import Order
from apps.orders.state import OrderState
from apps.risk.models import KillSwitch, RiskLimit
from tests.orders.conftest import order_body


def make_limit(manager, **body):
    response = manager.api.post("/risk/limits", {"scope": "TENANT", **body})
    assert response.status_code == 201, response.json_body
    return response.json_body


def test_denial_names_limit_version_value_and_limit(manager, granted_trader, account):
    limit = make_limit(manager, kind="MAX_ORDER_NOTIONAL", value="10000")
    manager.api.patch(f"/risk/limits/{limit['id']}", {"value": "15000"})
    response = granted_trader.api.post("/orders", order_body(account))  # 100 × 187.50
    assert response.status_code == 422
    body = response.json_body
    assert body["code"] == "RISK_LIMIT_BREACH"
    assert body["message"] == "Order notional 18750 exceeds limit 15000 for account PAPER1"
    assert {k: body["details"][k] for k in ("limit_id", "limit_version", "value", "limit")} == {
        "limit_id": limit["id"],
        "limit_version": 2,
        "value": "18750",
        "limit": "15000",
    }
    assert body["hint"] == "Reduce quantity or ask a risk manager for an override"
    assert Order.objects.count() == 0


def test_preview_lists_every_gate(manager, granted_trader, account):
    make_limit(manager, kind="MAX_ORDER_QTY", value="10")
    response = granted_trader.api.post("/orders/preview", order_body(account))
    assert response.status_code == 200
    body = response.json_body
    gates = [check["gate"] for check in body["checks"]]
    for gate in (
        "validation",
        "kill_switch",
        "trading_state",
        "MAX_ORDER_QTY",
        "MAX_ORDER_NOTIONAL",
        "MAX_POSITION_QTY",
        "MAX_GROSS_EXPOSURE",
        "MAX_OPEN_ORDERS",
        "ORDER_RATE",
        "DAILY_LOSS",
        "TRAILING_DRAWDOWN",
        "CONCENTRATION",
        "PRICE_BAND",
        "restricted_symbol",
        "restricted_account",
        "trading_hours",
        "wash_trade",
    ):
        assert gate in gates
    failed = [check for check in body["checks"] if not check["passed"]]
    assert [(c["gate"], c["value"], c["limit"]) for c in failed] == [("MAX_ORDER_QTY", "100", "10")]
    assert body["accepted"] is False
    assert body["projected"]["open_orders"] == 1
    assert body["projected"]["gross_exposure"]["potential"] == "1.875"
    assert Order.objects.count() == 0


def test_override_lets_the_order_through_until_revoked(manager, granted_trader, account):
    limit = make_limit(manager, kind="MAX_ORDER_QTY", value="10")
    until = (timezone.now() + timedelta(hours=1)).isoformat()
    override = manager.api.post(
        "/risk/overrides", {"limit_id": limit["id"], "value": "1000", "reason": "block trade", "valid_until": until}
    )
    assert override.status_code == 201 and override.json_body["active"] is True
    assert granted_trader.api.post("/orders", order_body(account)).status_code == 201
    assert manager.api.delete(f"/risk/overrides/{override.json_body['id']}").json_body["active"] is False
    assert granted_trader.api.post("/orders", order_body(account)).status_code == 422
    assert AuditLog.objects.filter(action__in=["risk.override.create", "risk.override.revoke"]).count() == 2


def test_override_needs_risk_override_scope(granted_trader, manager, account):
    limit = make_limit(manager, kind="MAX_ORDER_QTY", value="10")
    until = (timezone.now() + timedelta(hours=1)).isoformat()
    body = {"limit_id": limit["id"], "value": "1000", "reason": "x", "valid_until": until}
    assert granted_trader.api.post("/risk/overrides", body).status_code == 403


def test_order_rate_is_429_with_retry_after(manager, granted_trader, account):
    make_limit(manager, kind="ORDER_RATE", value="2", period="1m")
    for _ in range(2):
        assert granted_trader.api.post("/orders", order_body(account)).status_code == 201
    response = granted_trader.api.post("/orders", order_body(account))
    assert response.status_code == 429
    assert response.json_body["code"] == "RATE_LIMITED"
    assert 1 <= int(response["Retry-After"]) <= 60
    assert Order.objects.count() == 2


def test_limit_applies_to_modifications(manager, granted_trader, account):
    order = granted_trader.api.post("/orders", order_body(account)).json_body
    make_limit(manager, kind="MAX_ORDER_QTY", value="150")
    refused = granted_trader.api.patch(f"/orders/{order['id']}", {"quantity": "200"}, headers={"If-Match": '"1"'})
    assert refused.status_code == 422 and refused.json_body["details"]["limit"] == "150"
    denied = AuditLog.objects.get(action="order.modify_denied")
    assert denied.resource_id == order["id"]
    assert denied.after["requested"] == {"quantity": "200"}
    assert Order.objects.get(id=order["id"]).quantity == 100
    accepted = granted_trader.api.patch(f"/orders/{order['id']}", {"quantity": "150"}, headers={"If-Match": '"1"'})
    assert accepted.status_code == 200


def test_restricted_symbol_is_compliance_blocked(manager, granted_trader, account):
    assert (
        manager.api.post("/compliance/restricted", {"kind": "SYMBOL", "value": "aapl", "reason": "MNPI"}).status_code
        == 201
    )
    response = granted_trader.api.post("/orders", order_body(account))
    assert response.status_code == 422
    assert response.json_body["code"] == "COMPLIANCE_BLOCKED"
    assert response.json_body["details"]["rule"] == "restricted_symbol"
    assert Order.objects.count() == 0


def test_wash_trade_rule_refuses_a_crossing_order(manager, granted_trader, account):
    assert (
        manager.api.post("/compliance/rules", {"kind": "WASH_TRADE", "params": {"scope": "ACCOUNT"}}).status_code == 201
    )
    assert granted_trader.api.post("/orders", order_body(account, side="SELL", limit_price="187.00")).status_code == 201
    response = granted_trader.api.post("/orders", order_body(account))  # BUY at 187.50 crosses
    assert response.status_code == 422 and response.json_body["details"]["rule"] == "wash_trade"


def _run_risk_actions() -> int:
    client = get_redis()
    relay_pending(client=client)
    consumer = StreamConsumer(client=client, stream=RISK, group="oms-risk-actions", consumer="test")
    consumer.ensure_group()
    return act_on_entries(consumer, consumer.read(count=50, block_ms=None))


def test_kill_switch_cancels_200_working_orders_and_blocks_new_ones(manager, granted_trader, account):
    for index in range(200):
        response = granted_trader.api.post("/orders", order_body(account, quantity="1", client_order_id=f"k{index}"))
        assert response.status_code == 201
    Order.objects.filter(account=account).update(state=OrderState.ROUTED.value)  # as the broker acknowledged
    engaged = manager.api.post(
        "/risk/kill-switch", {"scope": "ACCOUNT", "scope_id": str(account.id), "reason": "runaway"}
    )
    assert engaged.status_code == 201
    again = manager.api.post("/risk/kill-switch", {"scope": "ACCOUNT", "scope_id": str(account.id), "reason": "again"})
    assert (again.status_code, again.json_body["id"]) == (200, engaged.json_body["id"])
    refused = granted_trader.api.post("/orders", order_body(account))
    assert refused.status_code == 423 and refused.json_body["code"] == "KILL_SWITCH_ACTIVE"
    assert _run_risk_actions() == 1
    assert Order.objects.filter(account=account, state=OrderState.PENDING_CANCEL.value).count() == 200
    assert KillSwitch.objects.get(id=engaged.json_body["id"]).cancelled_orders == 200
    status = manager.api.get("/risk/status").json_body
    assert [h["id"] for h in status["halted"]] == [engaged.json_body["id"]]
    assert granted_trader.api.delete(f"/risk/kill-switch/{engaged.json_body['id']}").status_code == 403
    released = manager.api.delete(f"/risk/kill-switch/{engaged.json_body['id']}")
    assert released.status_code == 200 and released.json_body["active"] is False
    assert granted_trader.api.post("/orders", order_body(account)).status_code == 201


def test_status_shows_limits_usage_exposure_and_breakers(manager, granted_trader, account):
    make_limit(manager, kind="MAX_OPEN_ORDERS", value="5")
    granted_trader.api.post("/orders", order_body(account))
    manager.api.post(
        "/risk/breakers", {"kind": "RECONCILIATION_BREAK", "account_id": str(account.id), "reason": "drift"}
    )
    status = manager.api.get("/risk/status").json_body
    assert status["limits"][0]["usage"] == [{"account_id": str(account.id), "value": "1"}]
    row = status["accounts"][0]
    assert (row["trading_state"], row["derisk_state"], row["open_orders"]) == ("HALTED", "NORMAL", 1)
    assert row["gross_exposure"]["hard_cap"] == "130"
    assert [b["kind"] for b in status["breakers"]] == ["RECONCILIATION_BREAK"]
    refused = granted_trader.api.post("/orders", order_body(account))
    assert refused.status_code == 423
    breaker_id = status["breakers"][0]["id"]
    assert manager.api.post(f"/risk/breakers/{breaker_id}/reset").json_body["state"] == "CLOSED"
    assert granted_trader.api.post("/orders", order_body(account)).status_code == 201


@pytest.mark.django_db(transaction=True)
def test_concurrent_orders_cannot_together_breach_a_limit(live_server, manager, granted_trader, account):
    RiskLimit.objects.create(
        tenant=manager.tenant,
        kind="MAX_POSITION_QTY",
        scope="TENANT",
        value=1000,
        created_at=timezone.now(),
        updated_at=timezone.now(),
    )
    url = f"{live_server.url}/api/v1/orders"
    headers = {"Authorization": f"Bearer {granted_trader.access}"}
    body = order_body(account, quantity="300")  # each passes alone; four would be 1200 > 1000

    def post(_: int) -> httpx.Response:
        with httpx.Client(timeout=30) as client:
            return client.post(url, content=orjson.dumps(body), headers={**headers, "Content-Type": "application/json"})

    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(post, range(12)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 3 + [422] * 9, [r.text for r in responses if r.status_code not in (201, 422)][:2]
    assert Order.objects.filter(account=account).count() == 3


def test_denials_are_audited_although_nothing_is_written(manager, granted_trader, account):
    limit = make_limit(manager, kind="MAX_ORDER_QTY", value="10")
    response = granted_trader.api.post("/orders", order_body(account, client_order_id="too-big-1"))
    assert response.status_code == 422
    entry = AuditLog.objects.get(action="order.denied")
    assert entry.tenant_id == account.tenant_id
    assert entry.resource_id == "too-big-1"
    assert entry.actor_label == granted_trader.user.email
    assert entry.after["code"] == "RISK_LIMIT_BREACH"
    assert entry.after["details"]["limit_id"] == limit["id"]
    assert entry.after["quantity"] == "100"
    assert Order.objects.count() == 0


def test_batch_denials_are_audited_per_item(manager, granted_trader, account):
    make_limit(manager, kind="MAX_ORDER_QTY", value="50")
    body = {"orders": [order_body(account, quantity="10"), order_body(account, quantity="60")]}
    response = granted_trader.api.post("/orders/batch", body)
    assert response.status_code == 200
    assert [item["status"] for item in response.json_body["results"]] == [201, 422]
    denied = AuditLog.objects.filter(action="order.denied")
    assert [entry.after["quantity"] for entry in denied] == ["60"]
    assert Order.objects.count() == 1
