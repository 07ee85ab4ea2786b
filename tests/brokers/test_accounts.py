"""Broker accounts, trading grants and instruments through the API."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import call_command

from apps.audit.models import AuditLog
from apps.brokers.models import AccountMode, Broker, BrokerAccount, ConnectionStatus, Instrument
from apps.brokers.services import (
    Connection,
    InstrumentData,
    broker_account_create,
    broker_account_grant,
    instrument_upsert,
)
from apps.common import crypto
from apps.common.context import Actor
from apps.events.models import OutboxEvent
from apps.tenants.services.tenants import tenant_provision
from tests.conftest import make_member

SYSTEM = Actor.system("test")


def paper_account(tenant, code="PAPER1"):
    return broker_account_create(
        tenant=tenant, actor=SYSTEM, broker=Broker.PAPER, account_code=code, mode=AccountMode.PAPER
    )


def test_create_ib_account_encrypts_credentials(manager):
    body = {
        "broker": "IB",
        "account_code": "DU123456",
        "mode": "PAPER",
        "connection": {"host": "127.0.0.1", "port": 4002, "client_id": 7},
        "credentials": {"username": "trader1", "password": "s3cret-pw"},
    }
    response = manager.api.post("/brokers/accounts", body)
    assert response.status_code == 201, response.json_body
    out = response.json_body
    assert out["status"] == "DISCONNECTED"
    assert out["connection"] == {"host": "127.0.0.1", "port": 4002, "client_id": 7}
    assert out["has_credentials"] is True
    assert "credentials" not in out
    account = BrokerAccount.objects.get(id=out["id"])
    assert "s3cret-pw" not in account.credentials_encrypted
    assert crypto.decrypt(account.credentials_encrypted) == "password=s3cret-pw\nusername=trader1"
    entry = AuditLog.objects.get(action="broker_account.create", resource_id=out["id"])
    assert "s3cret" not in str(entry.after)


def test_create_ib_account_without_connection_is_422(manager):
    response = manager.api.post("/brokers/accounts", {"broker": "IB", "account_code": "DU1", "mode": "LIVE"})
    assert response.status_code == 422
    assert response.json_body["details"] == {"connection": ["required for broker IB"]}
    assert not BrokerAccount.objects.exists()


def test_create_duplicate_account_is_409(manager):
    paper_account(manager.tenant, "P1")
    response = manager.api.post("/brokers/accounts", {"broker": "PAPER", "account_code": "P1", "mode": "PAPER"})
    assert response.status_code == 409
    assert response.json_body["code"] == "STATE_CONFLICT"
    assert BrokerAccount.objects.count() == 1


def test_trader_cannot_create_account(trader):
    response = trader.api.post("/brokers/accounts", {"broker": "PAPER", "account_code": "P1", "mode": "PAPER"})
    assert response.status_code == 403
    assert not BrokerAccount.objects.exists()


def test_connect_paper_account_is_connected_and_emits_event(manager):
    account = paper_account(manager.tenant)
    response = manager.api.post(f"/brokers/accounts/{account.id}/connect")
    assert response.status_code == 200
    assert response.json_body["status"] == "CONNECTED"
    assert response.json_body["last_heartbeat_at"] is not None
    event = OutboxEvent.objects.get(aggregate_id=str(account.id))
    assert (event.kind, event.stream, event.tenant_id) == ("broker.reconnected", "ev.brokers", manager.tenant.id)
    response = manager.api.post(f"/brokers/accounts/{account.id}/disconnect")
    assert response.json_body["status"] == "DISCONNECTED"
    assert OutboxEvent.objects.filter(kind="broker.disconnected").count() == 1
    actions = list(
        AuditLog.objects.filter(resource_id=str(account.id)).order_by("seq").values_list("action", flat=True)
    )
    assert actions == ["broker_account.create", "broker_account.connect", "broker_account.disconnect"]


def test_connect_ib_account_waits_for_gateway(manager):
    account = broker_account_create(
        tenant=manager.tenant,
        actor=SYSTEM,
        broker=Broker.IB,
        account_code="DU9",
        mode=AccountMode.PAPER,
        connection=Connection("127.0.0.1", 4002, 1),
    )
    response = manager.api.post(f"/brokers/accounts/{account.id}/connect")
    assert response.json_body["status"] == "RECONNECTING"
    assert response.json_body["connect_requested"] is True


def test_halted_account_cannot_connect(manager):
    account = paper_account(manager.tenant)
    BrokerAccount.objects.filter(id=account.id).update(status=ConnectionStatus.HALTED)
    response = manager.api.post(f"/brokers/accounts/{account.id}/connect")
    assert response.status_code == 409
    account.refresh_from_db()
    assert account.status == ConnectionStatus.HALTED


def test_trader_sees_only_granted_accounts(tenant, manager, trader):
    granted, hidden = paper_account(tenant, "G"), paper_account(tenant, "H")
    broker_account_grant(tenant=tenant, actor=SYSTEM, account_id=granted.id, user_id=trader.user.id)
    listed = trader.api.get("/brokers/accounts").json_body["items"]
    assert [item["account_code"] for item in listed] == ["G"]
    assert trader.api.get(f"/brokers/accounts/{hidden.id}").status_code == 404
    assert trader.api.get(f"/brokers/accounts/{granted.id}").status_code == 200
    assert {item["account_code"] for item in manager.api.get("/brokers/accounts").json_body["items"]} == {"G", "H"}


def test_grant_and_revoke_through_api(tenant, manager, trader):
    account = paper_account(tenant)
    response = manager.api.post(f"/brokers/accounts/{account.id}/grants", {"user_id": str(trader.user.id)})
    assert response.status_code == 201
    assert manager.api.get(f"/brokers/accounts/{account.id}/grants").json_body == [
        {"user_id": str(trader.user.id), "email": trader.user.email}
    ]
    assert trader.api.get(f"/brokers/accounts/{account.id}").status_code == 200
    response = manager.api.delete(f"/brokers/accounts/{account.id}/grants/{trader.user.id}")
    assert response.status_code == 204
    assert trader.api.get(f"/brokers/accounts/{account.id}").status_code == 404


def test_grant_to_a_non_member_is_404(tenant, other_tenant, manager):
    account = paper_account(tenant)
    outsider = make_member(other_tenant)
    response = manager.api.post(f"/brokers/accounts/{account.id}/grants", {"user_id": str(outsider.user.id)})
    assert response.status_code == 404


def test_other_tenants_account_is_404(tenant, other_tenant, manager):
    foreign = paper_account(other_tenant)
    assert manager.api.get(f"/brokers/accounts/{foreign.id}").status_code == 404
    assert manager.api.post(f"/brokers/accounts/{foreign.id}/connect").status_code == 404
    foreign.refresh_from_db()
    assert foreign.status == ConnectionStatus.DISCONNECTED


def test_instruments_filter_and_fields(viewer):
    actor = SYSTEM
    for symbol, asset_class in (("AAPL", "STK"), ("SPY", "ETF")):
        instrument_upsert(
            actor=actor,
            data=InstrumentData(symbol, "NASDAQ", "USD", asset_class, Decimal("0.01"), con_id=hash(symbol) % 10**6),
        )
    response = viewer.api.get("/instruments?symbol=aapl")
    assert response.status_code == 200
    (item,) = response.json_body["items"]
    assert (item["symbol"], item["tick_size"], item["lot_size"]) == ("AAPL", "0.01", "1")
    response = viewer.api.get("/instruments?asset_class=ETF&fields=symbol,tick_size")
    assert response.json_body["items"] == [{"symbol": "SPY", "tick_size": "0.01"}]
    assert viewer.api.get("/instruments?sector=tech").status_code == 422
    assert viewer.api.get("/instruments?fields=nope").status_code == 422


@pytest.mark.django_db
def test_seed_demo_brokers_is_idempotent():
    tenant_provision(
        slug="demo", name="Demo", admin_email="a@demo.example", admin_password="demo-admin-pass", actor=SYSTEM
    )
    call_command("seed_demo_brokers")
    call_command("seed_demo_brokers")
    accounts = {a.account_code: a for a in BrokerAccount.objects.all()}
    assert set(accounts) == {"DU1000001", "PAPER0001"}
    assert (accounts["DU1000001"].host, accounts["DU1000001"].port) == ("127.0.0.1", 4002)
    assert accounts["PAPER0001"].status == ConnectionStatus.CONNECTED
    aapl = Instrument.objects.get(symbol="AAPL")
    assert (aapl.con_id, aapl.tick_size) == (265598, Decimal("0.01"))
    assert Instrument.objects.filter(symbol="SHOP").count() == 2
