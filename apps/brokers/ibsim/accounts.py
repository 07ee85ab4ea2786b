"""Account values, portfolio rows and P&L, computed from the broker state and the current quotes.

The keys are the ones IB sends in updateAccountValue / accountSummary (NetLiquidation,
TotalCashValue, BuyingPower, ...). Margin is a flat Reg T style model: initial margin is
1/leverage of the gross position value, maintenance 3/4 of that; good enough for buying-power
rejects and whatIf answers, not a portfolio-margin engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from apps.brokers.ibsim.state import BrokerState, SimAccount, SimPosition

ZERO = Decimal(0)
CENT = Decimal("0.01")

Mark = Callable[[int], Decimal]
"""The mark price of a conId (the last price of its quote)."""


@dataclass(frozen=True, slots=True)
class PortfolioRow:
    """One updatePortfolio row."""

    position: SimPosition
    market_price: Decimal
    market_value: Decimal
    unrealized_pnl: Decimal


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """The numbers of one account at one moment."""

    account: SimAccount
    cash: Decimal
    gross_position_value: Decimal
    stock_market_value: Decimal
    net_liquidation: Decimal
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    init_margin: Decimal
    maint_margin: Decimal
    buying_power: Decimal
    available_funds: Decimal

    def values(self) -> list[tuple[str, str, str]]:
        """(key, value, currency) rows as updateAccountValue sends them."""
        currency = self.account.currency
        money = {
            "NetLiquidation": self.net_liquidation,
            "TotalCashValue": self.cash,
            "SettledCash": self.cash,
            "CashBalance": self.cash,
            "AccruedCash": ZERO,
            "BuyingPower": self.buying_power,
            "EquityWithLoanValue": self.net_liquidation,
            "PreviousDayEquityWithLoanValue": self.net_liquidation,
            "GrossPositionValue": self.gross_position_value,
            "StockMarketValue": self.stock_market_value,
            "RegTEquity": self.net_liquidation,
            "RegTMargin": self.init_margin,
            "SMA": max(self.net_liquidation - self.init_margin, ZERO),
            "InitMarginReq": self.init_margin,
            "MaintMarginReq": self.maint_margin,
            "FullInitMarginReq": self.init_margin,
            "FullMaintMarginReq": self.maint_margin,
            "AvailableFunds": self.available_funds,
            "FullAvailableFunds": self.available_funds,
            "ExcessLiquidity": self.net_liquidation - self.maint_margin,
            "FullExcessLiquidity": self.net_liquidation - self.maint_margin,
            "LookAheadInitMarginReq": self.init_margin,
            "LookAheadMaintMarginReq": self.maint_margin,
            "LookAheadAvailableFunds": self.available_funds,
            "LookAheadExcessLiquidity": self.net_liquidation - self.maint_margin,
            "UnrealizedPnL": self.unrealized_pnl,
            "RealizedPnL": self.realized_pnl,
        }
        rows = [("AccountType", "INDIVIDUAL", ""), ("AccountCode", self.account.code, "")]
        rows += [(key, _money(value), currency) for key, value in money.items()]
        cushion = (self.net_liquidation - self.maint_margin) / self.net_liquidation if self.net_liquidation else ZERO
        rows += [
            ("Cushion", str(cushion.quantize(Decimal("0.000001"))), ""),
            ("Leverage-S", str(self.account.leverage), ""),
            ("DayTradesRemaining", "-1", ""),
            ("Currency", currency, currency),
            ("ExchangeRate", "1.00", currency),
            ("CashBalance", _money(self.cash), "BASE"),
            ("TotalCashBalance", _money(self.cash), "BASE"),
            ("NetLiquidationByCurrency", _money(self.net_liquidation), "BASE"),
            ("RealizedPnL", _money(self.realized_pnl), "BASE"),
            ("UnrealizedPnL", _money(self.unrealized_pnl), "BASE"),
        ]
        return rows


def _money(value: Decimal) -> str:
    return str(value.quantize(CENT))


def portfolio(state: BrokerState, account: str, mark: Mark) -> list[PortfolioRow]:
    """The account's positions valued at their marks (flat positions with history included)."""
    rows = []
    for position in state.positions.values():
        if position.account != account:
            continue
        price = mark(position.con_id)
        value = position.quantity * price
        unrealized = (price - position.average_cost) * position.quantity
        rows.append(PortfolioRow(position, price, value, unrealized))
    return rows


def snapshot(state: BrokerState, account: str, mark: Mark) -> AccountSnapshot:
    """Compute the account's values now."""
    acct = state.accounts[account]
    rows = portfolio(state, account, mark)
    gross = sum((abs(r.market_value) for r in rows), ZERO)
    stock_value = sum((r.market_value for r in rows), ZERO)
    unrealized = sum((r.unrealized_pnl for r in rows), ZERO)
    realized = sum((r.position.realized_pnl for r in rows), ZERO)
    net_liq = acct.cash + stock_value
    init_margin = gross / acct.leverage
    maint_margin = init_margin * Decimal("0.75")
    available = net_liq - init_margin
    if acct.buying_power_override is not None:
        buying_power = acct.buying_power_override
    else:
        buying_power = max(available * acct.leverage, ZERO)
    return AccountSnapshot(
        account=acct,
        cash=acct.cash,
        gross_position_value=gross,
        stock_market_value=stock_value,
        net_liquidation=net_liq,
        unrealized_pnl=unrealized,
        realized_pnl=realized,
        init_margin=init_margin,
        maint_margin=maint_margin,
        buying_power=buying_power,
        available_funds=available,
    )
