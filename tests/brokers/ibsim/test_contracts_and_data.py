"""Contracts and market data through the real client: qualify, 200, ambiguity, ticks, 101, bars, PnL."""

from __future__ import annotations

from typing import Any

import pytest
from ib_async import Contract, Forex, MarketOrder, Stock
from ib_async.wrapper import RequestError

from apps.brokers.ibsim import IBSimulator
from apps.brokers.ibsim.testing import wait_until
from tests.brokers.ibsim.helpers import ACCOUNT, stock, wait_done


def test_qualify_fills_in_conid_and_primary_exchange(ib: Any) -> None:
    aapl, spy, ibm = Stock("AAPL", "SMART", "USD"), Stock("SPY", "SMART", "USD"), Stock("IBM", "SMART", "USD")
    assert ib.qualifyContracts(aapl, spy, ibm) == [aapl, spy, ibm]
    assert (aapl.conId, aapl.primaryExchange) == (265598, "NASDAQ")
    assert (spy.conId, spy.primaryExchange) == (756733, "ARCA")
    assert (ibm.conId, ibm.primaryExchange) == (8314, "NYSE")
    [details] = ib.reqContractDetails(Contract(conId=756733))
    assert details.stockType == "ETF"
    assert details.minTick == 0.0001


def test_unknown_symbol_is_error_200(ib: Any) -> None:
    errors: list[int] = []
    ib.errorEvent += lambda _req, code, *_: errors.append(code)
    assert ib.qualifyContracts(Stock("NOPE", "SMART", "USD")) == [None]
    assert errors == [200]
    ib.RaiseRequestErrors = True
    with pytest.raises(RequestError, match="200"):
        ib.reqContractDetails(Stock("NOPE", "SMART", "USD"))


def test_ambiguous_symbol_is_not_qualified_but_lists_both_listings(ib: Any, ibsim: IBSimulator) -> None:
    shop = Stock("SHOP", "SMART")
    assert ib.qualifyContracts(shop) == [None]
    [candidates] = ib.run(ib.qualifyContractsAsync(Stock("SHOP", "SMART"), returnAll=True))
    assert sorted((c.primaryExchange, c.currency) for c in candidates) == [("NYSE", "USD"), ("TSE", "CAD")]
    assert ib.qualifyContracts(Stock("SHOP", "SMART", "CAD"))[0].conId == 195014082
    errors: list[int] = []
    ib.errorEvent += lambda _req, code, *_: errors.append(code)
    trade = ib.placeOrder(Stock("SHOP", "SMART"), MarketOrder("BUY", 1))
    wait_done(ib, trade)
    assert errors == [200]
    assert ibsim.orders() == []


def test_snapshot_and_streaming_market_data(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 190, bid=189.99, ask=190.01, size=500)
    [ticker] = ib.reqTickers(contract)
    assert (ticker.bid, ticker.ask, ticker.last, ticker.bidSize) == (189.99, 190.01, 190.0, 500)
    live = ib.reqMktData(contract)
    assert wait_until(ib, lambda: live.bid == 189.99)
    ibsim.set_price("AAPL", 191, bid=190.99, ask=191.01)
    assert wait_until(ib, lambda: live.last == 191.0)
    assert live.marketDataType == 1
    ib.cancelMktData(contract)
    ibsim.set_price("AAPL", 192)
    ib.sleep(0.02)
    assert live.last == 191.0


def test_delayed_market_data_uses_the_delayed_tick_types(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ib.reqMarketDataType(3)
    ibsim.set_price("AAPL", 190, bid=189.99, ask=190.01)
    [ticker] = ib.reqTickers(contract)
    assert ticker.marketDataType == 3
    assert (ticker.bid, ticker.ask) == (189.99, 190.01)
    assert {t.tickType for t in ticker.ticks} >= {66, 67, 68}


@pytest.mark.ibsim(market_data_lines=3)
def test_market_data_line_limit_is_error_101(ib: Any) -> None:
    contracts = [stock(ib, s) for s in ("AAPL", "MSFT", "IBM", "SPY")]
    errors: list[tuple[int, int]] = []
    ib.errorEvent += lambda req, code, *_: errors.append((req, code))
    for contract in contracts:
        ib.reqMktData(contract)
    assert wait_until(ib, lambda: errors)
    assert [code for _, code in errors] == [101]


def test_historical_bars_and_the_watchdog_probe(ib: Any) -> None:
    bars = ib.reqHistoricalData(stock(ib), "", "1 D", "1 hour", "TRADES", useRTH=True)
    assert len(bars) == 24
    assert all(bar.low <= bar.close <= bar.high for bar in bars)
    probe = ib.reqHistoricalData(Forex("EURUSD"), "", "30 S", "5 secs", "MIDPOINT", False)
    assert len(probe) == 6


def test_pnl_and_portfolio_follow_fills(ib: Any, ibsim: IBSimulator) -> None:
    contract = stock(ib)
    ibsim.set_price("AAPL", 100, bid=100, ask=100)
    pnl = ib.reqPnL(ACCOUNT)
    wait_done(ib, ib.placeOrder(contract, MarketOrder("BUY", 100)))
    assert wait_until(ib, lambda: ib.portfolio() and ib.portfolio()[0].position == 100)
    ibsim.set_price("AAPL", 101, bid=101, ask=101)
    wait_done(ib, ib.placeOrder(contract, MarketOrder("SELL", 50)))
    assert wait_until(ib, lambda: pnl.realizedPnL == pytest.approx(49.475))  # 50 × (101 − 100.0035) − 0.35
    ib.cancelPnL(ACCOUNT)
