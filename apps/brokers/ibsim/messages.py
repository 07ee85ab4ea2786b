"""Encoders of the messages the simulator sends, field for field as ib_async 2.1 decodes them at 178.

ib_async's decoder swallows a malformed message (it logs and drops it), so every layout here
mirrors `ib_async.decoder.Decoder` exactly: "strict" messages (nextValidId, managedAccounts,
commissionReport, position, updatePortfolio, tickPrice) are unpacked with a fixed field count,
the long ones (openOrder, completedOrder, contractDetails) are read in order and break on any
shift. Integers must be plain integers (the decoder calls ``int()``), booleans 0/1, and an empty
field means "use the default".
"""

from __future__ import annotations

from decimal import Decimal

from apps.brokers.ibsim.catalogue import MARKET_RULES, Instrument
from apps.brokers.ibsim.protocol import UNSET_DOUBLE, Field, encode
from apps.brokers.ibsim.state import SimExecution, SimOrder, SimPosition

# Incoming and outgoing message ids (only the ones the simulator sends are listed here).
TICK_PRICE, TICK_SIZE, ORDER_STATUS, ERR_MSG, OPEN_ORDER = 1, 2, 3, 4, 5
ACCT_VALUE, PORTFOLIO_VALUE, ACCT_UPDATE_TIME, NEXT_VALID_ID, CONTRACT_DATA = 6, 7, 8, 9, 10
EXECUTION_DATA, MANAGED_ACCTS, HISTORICAL_DATA, TICK_GENERIC, TICK_STRING = 11, 15, 17, 45, 46
CURRENT_TIME, CONTRACT_DATA_END, OPEN_ORDER_END, ACCT_DOWNLOAD_END, EXECUTION_DATA_END = 49, 52, 53, 54, 55
TICK_SNAPSHOT_END, MARKET_DATA_TYPE, COMMISSION_REPORT, POSITION_DATA, POSITION_END = 57, 58, 59, 61, 62
ACCOUNT_SUMMARY, ACCOUNT_SUMMARY_END, POSITION_MULTI, POSITION_MULTI_END = 63, 64, 71, 72
ACCOUNT_UPDATE_MULTI, ACCOUNT_UPDATE_MULTI_END, SYMBOL_SAMPLES, TICK_REQ_PARAMS = 73, 74, 79, 81
MARKET_RULE, PNL, PNL_SINGLE, COMPLETED_ORDER, COMPLETED_ORDERS_END, USER_INFO = 93, 94, 95, 101, 102, 107


def contract_fields(instrument: Instrument, exchange: str | None = None) -> list[Field]:
    """The 11 contract fields most messages carry (conId … tradingClass, no primaryExchange)."""
    return [
        instrument.con_id,
        instrument.symbol,
        instrument.sec_type,
        "",  # lastTradeDateOrContractMonth
        0,  # strike
        "",  # right
        "",  # multiplier
        exchange if exchange is not None else instrument.exchange,
        instrument.currency,
        instrument.local_symbol,
        instrument.trading_class,
    ]


def error(req_id: int, code: int, message: str) -> bytes:
    """Error or notice: ``4, 2, reqId, code, message, advancedOrderRejectJson``."""
    return encode((ERR_MSG, 2, req_id, code, message, ""))


def managed_accounts(accounts: list[str]) -> bytes:
    return encode((MANAGED_ACCTS, 1, ",".join(accounts)))


def next_valid_id(order_id: int) -> bytes:
    return encode((NEXT_VALID_ID, 1, order_id))


def current_time(epoch: int) -> bytes:
    return encode((CURRENT_TIME, 1, epoch))


def order_status(order: SimOrder) -> bytes:
    """orderStatus has no version field; ``filled``/``remaining``/``avgFillPrice`` are cumulative."""
    remaining = order.quantity - order.filled if not order.is_done else Decimal(0)
    return encode(
        (
            ORDER_STATUS,
            order.order_id,
            order.status,
            order.filled,
            remaining,
            order.average_price,
            order.perm_id,
            order.parent_id,
            order.last_fill_price,
            order.client_id,
            order.why_held,
            0,  # mktCapPrice
        )
    )


def _price(value: Decimal | None) -> Field:
    return value if value is not None else ""


def _aux_price(order: SimOrder) -> Field:
    # A trailing-percent TRAIL order has no trailing amount: IB leaves auxPrice empty for it.
    return _price(order.aux_price if order.order_type != "TRAIL" or order.trailing_percent is None else None)


def open_order(
    order: SimOrder,
    instrument: Instrument,
    *,
    what_if: bool = False,
    margins: dict[str, str] | None = None,
    commission: Decimal | None = None,
) -> bytes:
    """openOrder at version 178: no version field, no faProfile, the PEG fields at the end."""
    margins = margins or {}
    fields: list[Field] = [OPEN_ORDER, order.order_id, *contract_fields(instrument, order.exchange)]
    fields += [
        order.action,
        order.quantity,
        order.order_type,
        _price(order.limit_price),
        _aux_price(order),
        order.tif,
        order.oca_group,
        order.account,
        "O",  # openClose
        0,  # origin: customer
        order.order_ref,
        order.client_id,
        order.perm_id,
        order.outside_rth,
        False,  # hidden
        0,  # discretionaryAmt
        order.good_after_time,
        "",  # deprecated sharesAllocation
        "",  # faGroup
        "",  # faMethod
        "",  # faPercentage
        # (no faProfile at >= 177)
        "",  # modelCode
        order.good_till_date,
        "",  # rule80A
        "",  # percentOffset
        "",  # settlingFirm
        0,  # shortSaleSlot
        "",  # designatedLocation
        -1,  # exemptCode
        0,  # auctionStrategy
        "",  # startingPrice
        "",  # stockRefPrice
        "",  # delta
        "",  # stockRangeLower
        "",  # stockRangeUpper
        "",  # displaySize
        False,  # blockOrder
        False,  # sweepToFill
        False,  # allOrNone
        "",  # minQty
        order.oca_type,
        False,  # eTradeOnly
        False,  # firmQuoteOnly
        "",  # nbboPriceCap
        order.parent_id,
        0,  # triggerMethod
        "",  # volatility
        "",  # volatilityType
        "",  # deltaNeutralOrderType (empty: no delta-neutral block follows)
        "",  # deltaNeutralAuxPrice
        False,  # continuousUpdate
        "",  # referencePriceType
        _price(order.trail_stop_price),
        _price(order.trailing_percent),
        "",  # basisPoints
        "",  # basisPointsType
        "",  # comboLegsDescrip
        0,  # combo legs
        0,  # order combo leg prices
        0,  # smart combo routing params
        "",  # scaleInitLevelSize
        "",  # scaleSubsLevelSize
        "",  # scalePriceIncrement (empty: no scale block follows)
        "",  # hedgeType (empty: no hedgeParam follows)
        False,  # optOutSmartRouting
        "",  # clearingAccount
        "",  # clearingIntent
        False,  # notHeld
        False,  # delta-neutral contract present
        "",  # algoStrategy (empty: no algo params follow)
        False,  # solicited
        what_if,
        order.status,
        *(
            margins.get(name, "")
            for name in (
                "initMarginBefore",
                "maintMarginBefore",
                "equityWithLoanBefore",
                "initMarginChange",
                "maintMarginChange",
                "equityWithLoanChange",
                "initMarginAfter",
                "maintMarginAfter",
                "equityWithLoanAfter",
            )
        ),
        _price(commission),
        _price(commission),  # minCommission
        _price(commission),  # maxCommission
        "USD" if commission is not None else "",
        "",  # warningText
        False,  # randomizeSize
        False,  # randomizePrice
        0,  # conditions
        "",  # adjustedOrderType
        "",  # triggerPrice
        _price(order.trail_stop_price),
        "",  # lmtPriceOffset
        "",  # adjustedStopPrice
        "",  # adjustedStopLimitPrice
        "",  # adjustedTrailingAmount
        0,  # adjustableTrailingUnit
        "",  # softDollarTier name
        "",  # softDollarTier value
        "",  # softDollarTier displayName
        "",  # cashQty
        False,  # dontUseAutoPriceForHedge
        False,  # isOmsContainer
        False,  # discretionaryUpToLimitPrice
        False,  # usePriceMgmtAlgo
        "",  # duration
        "",  # postToAts
        False,  # autoCancelParent
        "",  # minTradeQty
        "",  # minCompeteSize
        "",  # competeAgainstBestOffset
        "",  # midOffsetAtWhole
        "",  # midOffsetAtHalf
    ]
    return encode(fields)


def completed_order(order: SimOrder, instrument: Instrument, parent_perm_id: int, completed_time: str) -> bytes:
    """completedOrder: like openOrder but without orderId/clientId, and a different subset."""
    fields: list[Field] = [COMPLETED_ORDER, *contract_fields(instrument, order.exchange)]
    fields += [
        order.action,
        order.quantity,
        order.order_type,
        _price(order.limit_price),
        _aux_price(order),
        order.tif,
        order.oca_group,
        order.account,
        "O",  # openClose
        0,  # origin
        order.order_ref,
        order.perm_id,
        order.outside_rth,
        False,  # hidden
        0,  # discretionaryAmt
        order.good_after_time,
        "",  # faGroup
        "",  # faMethod
        "",  # faPercentage
        "",  # modelCode
        order.good_till_date,
        "",  # rule80A
        "",  # percentOffset
        "",  # settlingFirm
        0,  # shortSaleSlot
        "",  # designatedLocation
        -1,  # exemptCode
        "",  # startingPrice
        "",  # stockRefPrice
        "",  # delta
        "",  # stockRangeLower
        "",  # stockRangeUpper
        "",  # displaySize
        False,  # sweepToFill
        False,  # allOrNone
        "",  # minQty
        order.oca_type,
        0,  # triggerMethod
        "",  # volatility
        "",  # volatilityType
        "",  # deltaNeutralOrderType
        "",  # deltaNeutralAuxPrice
        False,  # continuousUpdate
        "",  # referencePriceType
        _price(order.trail_stop_price),
        _price(order.trailing_percent),
        "",  # comboLegsDescrip
        0,  # combo legs
        0,  # order combo leg prices
        0,  # smart combo routing params
        "",  # scaleInitLevelSize
        "",  # scaleSubsLevelSize
        "",  # scalePriceIncrement
        "",  # hedgeType
        "",  # clearingAccount
        "",  # clearingIntent
        False,  # notHeld
        False,  # delta-neutral contract present
        "",  # algoStrategy
        False,  # solicited
        order.status,
        False,  # randomizeSize
        False,  # randomizePrice
        0,  # conditions
        _price(order.trail_stop_price),
        "",  # lmtPriceOffset
        "",  # cashQty
        False,  # dontUseAutoPriceForHedge
        False,  # isOmsContainer
        "",  # autoCancelDate
        order.filled,
        0,  # refFuturesConId
        False,  # autoCancelParent
        "",  # shareholder
        False,  # imbalanceOnly
        False,  # routeMarketableToBbo
        parent_perm_id,
        completed_time,
        order.completed_status,
        "",  # minTradeQty
        "",  # minCompeteSize
        "",  # competeAgainstBestOffset
        "",  # midOffsetAtWhole
        "",  # midOffsetAtHalf
    ]
    return encode(fields)


def exec_details(req_id: int, execution: SimExecution, instrument: Instrument, time_text: str) -> bytes:
    """execDetails at 178 (with pendingPriceRevision); reqId is -1 for live fills."""
    return encode(
        (
            EXECUTION_DATA,
            req_id,
            execution.order_id,
            *contract_fields(instrument, execution.exchange),
            execution.exec_id,
            time_text,
            execution.account,
            execution.exchange,
            execution.side,
            execution.shares,
            execution.price,
            execution.perm_id,
            execution.client_id,
            0,  # liquidation
            execution.cum_qty,
            execution.avg_price,
            execution.order_ref,
            "",  # evRule
            "",  # evMultiplier
            "",  # modelCode
            execution.liquidity,
            False,  # pendingPriceRevision
        )
    )


def commission_report(execution: SimExecution) -> bytes:
    """Strict 8 fields. IB sends its max double for 'no realised P&L' and 'no yield'."""
    realized = execution.realized_pnl if execution.realized_pnl is not None else UNSET_DOUBLE
    return encode((COMMISSION_REPORT, 1, execution.exec_id, execution.commission, "USD", realized, UNSET_DOUBLE, ""))


def position(account: str, instrument: Instrument, pos: SimPosition) -> bytes:
    """Strict 16 fields; exchange is left empty, as IB does for positions."""
    fields = contract_fields(instrument, "")
    return encode((POSITION_DATA, 3, account, *fields, pos.quantity, pos.average_cost))


def position_multi(req_id: int, account: str, instrument: Instrument, pos: SimPosition) -> bytes:
    fields = contract_fields(instrument, "")
    return encode((POSITION_MULTI, 1, req_id, account, *fields, pos.quantity, pos.average_cost, ""))


def portfolio_value(
    account: str, instrument: Instrument, pos: SimPosition, price: Decimal, value: Decimal, unrealized: Decimal
) -> bytes:
    """Strict 20 fields; here the contract carries primaryExchange where others carry exchange."""
    return encode(
        (
            PORTFOLIO_VALUE,
            8,
            *contract_fields(instrument, instrument.primary_exchange),
            pos.quantity,
            price,
            value.quantize(Decimal("0.01")),
            pos.average_cost,
            unrealized.quantize(Decimal("0.01")),
            pos.realized_pnl.quantize(Decimal("0.01")),
            account,
        )
    )


def contract_details(req_id: int, instrument: Instrument, exchange: str) -> bytes:
    """contractDetails at >= 164: no version field, no mdSizeMultiplier, sizes at the end."""
    fields: list[Field] = [
        CONTRACT_DATA,
        req_id,
        instrument.symbol,
        instrument.sec_type,
        "",  # lastTradeDate
        0,  # strike
        "",  # right
        exchange,
        instrument.currency,
        instrument.local_symbol,
        instrument.trading_class,  # marketName
        instrument.trading_class,
        instrument.con_id,
        instrument.min_tick,
        "",  # multiplier
        "ACTIVETIM,AD,ALERT,ALLOC,AVGCOST,DAY,GTC,GTD,IOC,FOK,LMT,LOC,MKT,MOC,OCA,STP,STPLMT,TRAIL,WHATIF",
        instrument.valid_exchanges,
        1,  # priceMagnifier
        0,  # underConId
        instrument.long_name,
        instrument.primary_exchange,
        "",  # contractMonth
        instrument.industry,
        instrument.category,
        "",  # subcategory
        instrument.time_zone,
        "",  # tradingHours
        "",  # liquidHours
        "",  # evRule
        "",  # evMultiplier
        0,  # secIdList count
        1,  # aggGroup
        "",  # underSymbol
        "",  # underSecType
        ",".join(str(instrument.market_rule_id) for _ in instrument.valid_exchanges.split(",")),
        "",  # realExpirationDate
        instrument.stock_type,
        1 if instrument.sec_type != "CASH" else Decimal("0.01"),  # minSize
        1 if instrument.sec_type != "CASH" else Decimal("0.01"),  # sizeIncrement
        100 if instrument.sec_type != "CASH" else Decimal("0.01"),  # suggestedSizeIncrement
    ]
    return encode(fields)


def market_rule(rule_id: int) -> bytes:
    increments = MARKET_RULES.get(rule_id, ())
    fields: list[Field] = [MARKET_RULE, rule_id, len(increments)]
    for low_edge, increment in increments:
        fields += [low_edge, increment]
    return encode(fields)


def tick_price(req_id: int, tick_type: int, price: Decimal, size: Decimal) -> bytes:
    """Strict 7 fields; attribMask 0."""
    return encode((TICK_PRICE, 6, req_id, tick_type, price, size, 0))


def tick_size(req_id: int, tick_type: int, size: Decimal) -> bytes:
    return encode((TICK_SIZE, 6, req_id, tick_type, size))


def tick_string(req_id: int, tick_type: int, value: str) -> bytes:
    return encode((TICK_STRING, 6, req_id, tick_type, value))


def tick_req_params(req_id: int, min_tick: Decimal, bbo_exchange: str) -> bytes:
    return encode((TICK_REQ_PARAMS, req_id, min_tick, bbo_exchange, 3))


def market_data_type(req_id: int, data_type: int) -> bytes:
    return encode((MARKET_DATA_TYPE, 1, req_id, data_type))


def simple(message_id: int, *fields: Field) -> bytes:
    """Any message whose layout is just the id followed by `fields`."""
    return encode((message_id, *fields))
