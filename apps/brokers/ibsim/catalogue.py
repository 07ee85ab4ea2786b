"""The instruments the simulator knows: stocks, ETFs and one FX pair, with IB's conIds and tick rules.

conIds are the ones IB uses for these listings, so logs look familiar. ``SHOP`` is deliberately
listed twice (NYSE in USD, TSX in CAD): a request without a currency is ambiguous, as it is at IB,
where reqContractDetails answers with both listings and placeOrder/reqMktData answer error 200.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

STOCK_ORDER_TYPES = (
    "ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AON,AVGCOST,BASKET,COND,CONDORDER,DAY,DEACT,DEACTDIS,DEACTEOD,"
    "GAT,GTC,GTD,GTT,HID,IBKRATS,ICE,IMB,IOC,LIT,LMT,LOC,MIT,MKT,MOC,MTL,NGCOMB,NONALGO,OCA,PEGBENCH,"
    "REL,RELPCTOFS,SCALE,SCALERST,SNAPMID,SNAPMKT,SNAPREL,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,WHATIF"
)

# IB market rule 26: US stocks tick 0.0001 below $1 and 0.01 from $1.
US_STOCK_RULE = 26
FX_RULE = 239
MARKET_RULES: dict[int, tuple[tuple[Decimal, Decimal], ...]] = {
    US_STOCK_RULE: ((Decimal(0), Decimal("0.0001")), (Decimal(1), Decimal("0.01"))),
    FX_RULE: ((Decimal(0), Decimal("0.00005")),),
}


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable listing."""

    con_id: int
    symbol: str
    sec_type: str
    primary_exchange: str
    currency: str
    long_name: str
    reference_price: Decimal
    category: str = ""
    industry: str = ""
    stock_type: str = "COMMON"
    exchange: str = "SMART"
    market_rule_id: int = US_STOCK_RULE
    time_zone: str = "US/Eastern"
    valid_exchanges: str = "SMART,AMEX,NYSE,CBOE,PHLX,ISE,CHX,ARCA,NASDAQ,DRCTEDGE,BEX,BATS,EDGEA,IEX"

    @property
    def local_symbol(self) -> str:
        return self.symbol if self.sec_type != "CASH" else f"{self.symbol}.{self.currency}"

    @property
    def trading_class(self) -> str:
        if self.sec_type == "CASH":
            return f"{self.symbol}.{self.currency}"
        return self.symbol

    def tick_size(self, price: Decimal) -> Decimal:
        """The minimum price increment at `price`, from the instrument's market rule."""
        size = MARKET_RULES[self.market_rule_id][0][1]
        for low_edge, increment in MARKET_RULES[self.market_rule_id]:
            if price >= low_edge:
                size = increment
        return size

    @property
    def min_tick(self) -> Decimal:
        return MARKET_RULES[self.market_rule_id][0][1]

    def round_to_tick(self, price: Decimal) -> Decimal:
        tick = self.tick_size(price)
        return (price / tick).to_integral_value() * tick


def _stock(con_id: int, symbol: str, primary: str, name: str, price: str, industry: str, **extra: str) -> Instrument:
    return Instrument(
        con_id=con_id,
        symbol=symbol,
        sec_type="STK",
        primary_exchange=primary,
        currency=extra.get("currency", "USD"),
        long_name=name,
        reference_price=Decimal(price),
        industry=industry,
        category=extra.get("category", ""),
        stock_type=extra.get("stock_type", "COMMON"),
        time_zone=extra.get("time_zone", "US/Eastern"),
    )


DEFAULT_INSTRUMENTS: tuple[Instrument, ...] = (
    _stock(265598, "AAPL", "NASDAQ", "APPLE INC", "190.00", "Technology", category="Computers"),
    _stock(272093, "MSFT", "NASDAQ", "MICROSOFT CORP", "410.00", "Technology", category="Software"),
    _stock(3691937, "AMZN", "NASDAQ", "AMAZON.COM INC", "178.00", "Communications", category="Internet"),
    _stock(208813719, "GOOGL", "NASDAQ", "ALPHABET INC-CL A", "150.00", "Communications", category="Internet"),
    _stock(4815747, "NVDA", "NASDAQ", "NVIDIA CORP", "880.00", "Technology", category="Semiconductors"),
    _stock(76792991, "TSLA", "NASDAQ", "TESLA INC", "175.00", "Consumer, Cyclical", category="Auto Manufacturers"),
    _stock(8314, "IBM", "NYSE", "INTL BUSINESS MACHINES CORP", "190.00", "Technology", category="Computers"),
    _stock(1520593, "JPM", "NYSE", "JPMORGAN CHASE & CO", "195.00", "Financial", category="Banks"),
    _stock(13977, "XOM", "NYSE", "EXXON MOBIL CORP", "115.00", "Energy", category="Oil&Gas"),
    _stock(72063691, "BRK B", "NYSE", "BERKSHIRE HATHAWAY INC-CL B", "410.00", "Financial", category="Insurance"),
    _stock(4391, "AMD", "NASDAQ", "ADVANCED MICRO DEVICES", "180.00", "Technology", category="Semiconductors"),
    _stock(756733, "SPY", "ARCA", "SPDR S&P 500 ETF TRUST", "510.00", "", stock_type="ETF"),
    _stock(320227571, "QQQ", "NASDAQ", "INVESCO QQQ TRUST SERIES 1", "440.00", "", stock_type="ETF"),
    _stock(9579970, "IWM", "ARCA", "ISHARES RUSSELL 2000 ETF", "205.00", "", stock_type="ETF"),
    _stock(15547841, "TLT", "NASDAQ", "ISHARES 20+ YEAR TREASURY BOND", "93.00", "", stock_type="ETF"),
    _stock(51529211, "GLD", "ARCA", "SPDR GOLD SHARES", "200.00", "", stock_type="ETF"),
    _stock(12340038, "VTI", "ARCA", "VANGUARD TOTAL STOCK MKT ETF", "250.00", "", stock_type="ETF"),
    _stock(52197301, "AGG", "ARCA", "ISHARES CORE U.S. AGGREGATE", "98.00", "", stock_type="ETF"),
    _stock(27684070, "VEA", "ARCA", "VANGUARD FTSE DEVELOPED ETF", "49.00", "", stock_type="ETF"),
    _stock(37018770, "SIRI", "NASDAQ", "SIRIUS XM HOLDINGS INC", "0.85", "Communications", category="Media"),
    # The ambiguous symbol: the same company on two primary exchanges in two currencies.
    _stock(195014116, "SHOP", "NYSE", "SHOPIFY INC - CLASS A", "78.00", "Communications", category="Internet"),
    _stock(
        195014082,
        "SHOP",
        "TSE",
        "SHOPIFY INC - CLASS A",
        "106.00",
        "Communications",
        category="Internet",
        currency="CAD",
        time_zone="America/Toronto",
    ),
    Instrument(
        con_id=12087792,
        symbol="EUR",
        sec_type="CASH",
        primary_exchange="IDEALPRO",
        currency="USD",
        long_name="European Monetary Union Euro",
        reference_price=Decimal("1.0850"),
        exchange="IDEALPRO",
        market_rule_id=FX_RULE,
        time_zone="US/Eastern",
        valid_exchanges="IDEALPRO",
        stock_type="",
    ),
)


@dataclass(frozen=True, slots=True)
class ContractQuery:
    """The identifying fields of a contract as a client sent them (empty means 'any')."""

    con_id: int = 0
    symbol: str = ""
    sec_type: str = ""
    exchange: str = ""
    primary_exchange: str = ""
    currency: str = ""
    local_symbol: str = ""

    def describe(self) -> str:
        return self.symbol or self.local_symbol or str(self.con_id)


class Catalogue:
    """Look instruments up the way IB resolves a (possibly partial) contract description."""

    def __init__(self, instruments: tuple[Instrument, ...] = DEFAULT_INSTRUMENTS) -> None:
        self._by_con_id = {i.con_id: i for i in instruments}
        self.instruments = instruments

    def get(self, con_id: int) -> Instrument | None:
        return self._by_con_id.get(con_id)

    def find_symbol(self, symbol: str, currency: str = "") -> Instrument | None:
        """The unique instrument with this symbol (and currency), for the control API."""
        found = self.lookup(ContractQuery(symbol=symbol, currency=currency))
        return found[0] if len(found) == 1 else None

    def lookup(self, query: ContractQuery) -> list[Instrument]:
        """Every instrument matching the description; more than one means it is ambiguous."""
        if query.con_id:
            instrument = self._by_con_id.get(query.con_id)
            return [instrument] if instrument is not None else []
        symbol = query.symbol.upper()
        local = query.local_symbol.upper()
        if not symbol and not local:
            return []
        matches = []
        for instrument in self.instruments:
            if symbol and instrument.symbol != symbol:
                continue
            if local and instrument.local_symbol != local:
                continue
            if query.sec_type and instrument.sec_type != query.sec_type.upper():
                continue
            if query.currency and instrument.currency != query.currency.upper():
                continue
            if query.primary_exchange and instrument.primary_exchange != query.primary_exchange.upper():
                continue
            exchange = query.exchange.upper()
            known = (instrument.exchange, instrument.primary_exchange, "SMART", *instrument.valid_exchanges.split(","))
            if exchange and exchange not in known:
                continue
            matches.append(instrument)
        return matches
