"""Shared assertions for the simulator tests: what the client holds equals what the simulator holds."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ib_async import Stock

from apps.brokers.ibsim import IBSimulator
from apps.brokers.ibsim.testing import wait_until

ACCOUNT = "DU1000001"


def stock(ib: Any, symbol: str = "AAPL") -> Any:
    contract = Stock(symbol, "SMART", "USD")
    assert ib.qualifyContracts(contract) == [contract]
    return contract


def wait_done(ib: Any, trade: Any, timeout: float = 2.0) -> None:
    assert wait_until(ib, trade.isDone, timeout), f"trade not done: {trade.orderStatus}"


def wait_status(ib: Any, trade: Any, status: str, timeout: float = 2.0) -> None:
    assert wait_until(ib, lambda: trade.orderStatus.status == status, timeout), trade.orderStatus


def _cash(ib: Any) -> list[Decimal]:
    return [Decimal(v.value) for v in ib.accountValues() if v.tag == "TotalCashValue" and v.currency == "USD"]


def assert_books_match(ib: Any, sim: IBSimulator) -> None:
    """Fills (with commissions), positions and cash of the client equal the simulator's."""
    # Account values are pushed coalesced (as TWS does), a few tens of milliseconds after fills.
    expected_cash = [sim.account(ACCOUNT).cash.quantize(Decimal("0.01"))]
    wait_until(ib, lambda: _cash(ib) == expected_cash)
    executions = {e.exec_id: e for e in sim.executions()}
    fills = {f.execution.execId: f for f in ib.fills()}
    assert set(fills) == set(executions)
    for exec_id, fill in fills.items():
        execution = executions[exec_id]
        assert Decimal(str(fill.execution.shares)) == execution.shares
        assert Decimal(str(fill.execution.price)) == execution.price
        assert fill.execution.permId == execution.perm_id
        assert Decimal(str(fill.commissionReport.commission)) == execution.commission
    positions = {(p.account, p.contract.conId): p for p in ib.positions()}
    expected = {(p.account, p.con_id): p for p in sim.positions()}
    assert set(positions) == set(expected)
    for key, position in positions.items():
        assert Decimal(str(position.position)) == expected[key].quantity
        assert abs(Decimal(str(position.avgCost)) - expected[key].average_cost) < Decimal("0.000001")
    assert _cash(ib) == expected_cash
