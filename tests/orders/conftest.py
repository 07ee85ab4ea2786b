"""Fixtures of the orders tests: an instrument universe and a connected paper account."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from apps.brokers.models import AccountMode, Broker, BrokerAccount, Instrument
from apps.brokers.services import (
    InstrumentData,
    broker_account_connect,
    broker_account_create,
    broker_account_grant,
    instrument_upsert,
)
from apps.common.context import Actor

SYSTEM = Actor.system("test")


def make_instruments() -> dict[str, Instrument]:
    rows = [
        InstrumentData("AAPL", "NASDAQ", "USD", "STK", Decimal("0.01"), con_id=265598),
        InstrumentData("SPY", "ARCA", "USD", "ETF", Decimal("0.01"), con_id=756733),
        InstrumentData("SHOP", "NYSE", "USD", "STK", Decimal("0.01"), con_id=195014116),
        InstrumentData("SHOP", "TSE", "CAD", "STK", Decimal("0.01"), con_id=195014082),
        InstrumentData("EUR", "IDEALPRO", "USD", "FX", Decimal("0.00005"), lot_size=Decimal(1000), con_id=12087792),
    ]
    made = {}
    for data in rows:
        instrument = instrument_upsert(data=data, actor=SYSTEM)
        made[f"{data.symbol}.{data.currency}" if data.symbol == "SHOP" else data.symbol] = instrument
    return made


@pytest.fixture
def instruments(db: Any) -> dict[str, Instrument]:
    return make_instruments()


def make_account(tenant, code: str = "PAPER1", *, connect: bool = True) -> BrokerAccount:
    account = broker_account_create(
        tenant=tenant, actor=SYSTEM, broker=Broker.PAPER, account_code=code, mode=AccountMode.PAPER
    )
    if connect:
        account = broker_account_connect(tenant=tenant, actor=SYSTEM, account_id=account.id)
    return account


@pytest.fixture
def account(tenant, instruments) -> BrokerAccount:
    return make_account(tenant)


@pytest.fixture
def granted_trader(trader, account):
    broker_account_grant(tenant=trader.tenant, actor=SYSTEM, account_id=account.id, user_id=trader.user.id)
    return trader


def order_body(account: BrokerAccount, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "account_id": str(account.id),
        "symbol": "AAPL",
        "side": "BUY",
        "quantity": "100",
        "order_type": "LMT",
        "limit_price": "187.50",
        "time_in_force": "DAY",
    }
    body.update(overrides)
    return {name: value for name, value in body.items() if value is not ...}
