"""Decoders of client requests whose layout is more than a couple of fields.

`parse_place_order` walks the whole placeOrder message at version 178, the mirror image of
`ib_async.client.Client.placeOrder`: every conditional block (combo legs, delta neutral, scale,
hedge, algo params, PEG BENCH, conditions, the IBKRATS / PEG BEST / PEG MID tail) is read, so
that the fields after them (transmit, parentId, whatIf, orderRef, ...) are the right ones, and a
message with fields left over is a protocol error rather than a silently misread order.
"""

from __future__ import annotations

from dataclasses import dataclass

from apps.brokers.ibsim.catalogue import ContractQuery
from apps.brokers.ibsim.interfaces import PlaceRequest
from apps.brokers.ibsim.protocol import FieldReader, ProtocolError

# Fields after the type of each order condition (ib_async's OrderCondition dataclasses).
CONDITION_FIELDS = {1: 6, 3: 3, 4: 3, 5: 4, 6: 5, 7: 5}


@dataclass(frozen=True, slots=True)
class WireContract:
    """The 12 contract fields requests carry, plus secType for the BAG check."""

    query: ContractQuery
    sec_type: str


def read_contract(reader: FieldReader) -> WireContract:
    """conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange, primaryExchange,
    currency, localSymbol, tradingClass."""
    con_id = reader.int()
    symbol = reader.str()
    sec_type = reader.str()
    reader.skip(4)  # lastTradeDateOrContractMonth, strike, right, multiplier
    exchange = reader.str()
    primary = reader.str()
    currency = reader.str()
    local_symbol = reader.str()
    reader.str()  # tradingClass
    query = ContractQuery(
        con_id=con_id,
        symbol=symbol,
        sec_type=sec_type,
        exchange=exchange,
        primary_exchange=primary,
        currency=currency,
        local_symbol=local_symbol,
    )
    return WireContract(query, sec_type)


def _read_tag_values(reader: FieldReader) -> None:
    for _ in range(reader.int()):
        reader.skip(2)


def parse_place_order(fields: list[str], server_version: int) -> PlaceRequest:
    """Decode a placeOrder (message 3) sent at `server_version` (157..178)."""
    r = FieldReader(fields)
    order_id = r.int()
    contract = read_contract(r)
    r.skip(2)  # secIdType, secId
    action = r.str()
    quantity = r.decimal()
    order_type = r.str()
    limit_price = r.decimal()
    aux_price = r.decimal()
    tif = r.str()
    oca_group = r.str()
    account = r.str()
    r.skip(2)  # openClose, origin
    order_ref = r.str()
    transmit = r.bool()
    parent_id = r.int()
    r.skip(4)  # blockOrder, sweepToFill, displaySize, triggerMethod
    outside_rth = r.bool()
    r.str()  # hidden
    if contract.sec_type == "BAG":
        for _ in range(r.int()):
            r.skip(8)
        for _ in range(r.int()):
            r.str()
        _read_tag_values(r)
    r.skip(2)  # deprecated sharesAllocation, discretionaryAmt
    good_after_time = r.str()
    good_till_date = r.str()
    r.skip(3)  # faGroup, faMethod, faPercentage
    if server_version < 177:
        r.str()  # faProfile
    r.skip(4)  # modelCode, shortSaleSlot, designatedLocation, exemptCode
    oca_type = r.int()
    # rule80A, settlingFirm, allOrNone, minQty, percentOffset, eTradeOnly, firmQuoteOnly,
    # nbboPriceCap, auctionStrategy, startingPrice, stockRefPrice, delta, stockRangeLower,
    # stockRangeUpper, overridePercentageConstraints, volatility, volatilityType
    r.skip(17)
    delta_neutral_type = r.str()
    r.str()  # deltaNeutralAuxPrice
    if delta_neutral_type:
        r.skip(8)
    r.skip(2)  # continuousUpdate, referencePriceType
    trail_stop_price = r.decimal()
    trailing_percent = r.decimal()
    r.skip(2)  # scaleInitLevelSize, scaleSubsLevelSize
    scale_increment = r.decimal()
    if scale_increment is not None and scale_increment > 0:
        r.skip(7)
    r.skip(3)  # scaleTable, activeStartTime, activeStopTime
    if r.str():  # hedgeType
        r.str()  # hedgeParam
    r.skip(4)  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld
    if r.bool():  # delta-neutral contract
        r.skip(3)
    if r.str():  # algoStrategy
        _read_tag_values(r)
    r.str()  # algoId
    what_if = r.bool()
    r.skip(4)  # orderMiscOptions, solicited, randomizeSize, randomizePrice
    if order_type in ("PEG BENCH", "PEGBENCH"):
        r.skip(5)
    conditions = r.int()
    for _ in range(conditions):
        kind = r.int()
        if kind not in CONDITION_FIELDS:
            raise ProtocolError(f"unknown order condition type {kind}")
        r.skip(CONDITION_FIELDS[kind])
    if conditions:
        r.skip(2)  # conditionsIgnoreRth, conditionsCancelOrder
    # adjustedOrderType, triggerPrice, lmtPriceOffset, adjustedStopPrice, adjustedStopLimitPrice,
    # adjustedTrailingAmount, adjustableTrailingUnit, extOperator, softDollarTier name and value,
    # cashQty, 4 × MiFID II, dontUseAutoPriceForHedge, isOmsContainer,
    # discretionaryUpToLimitPrice, usePriceMgmtAlgo
    r.skip(19)
    if server_version >= 158:
        r.str()  # duration
    if server_version >= 160:
        r.str()  # postToAts
    if server_version >= 162:
        r.str()  # autoCancelParent
    if server_version >= 166:
        r.str()  # advancedErrorOverride
    if server_version >= 169:
        r.str()  # manualOrderTime
    if server_version >= 170:
        if contract.query.exchange == "IBKRATS":
            r.str()  # minTradeQty
        if order_type in ("PEG BEST", "PEGBEST"):
            r.str()  # minCompeteSize
            if r.str() == "Infinite":  # competeAgainstBestOffset "up to mid"
                r.skip(2)
        elif order_type in ("PEG MID", "PEGMID"):
            r.skip(2)
    if r.remaining():
        raise ProtocolError(f"placeOrder has {r.remaining()} unexpected trailing fields")
    if quantity is None:
        raise ProtocolError("placeOrder without a quantity")
    return PlaceRequest(
        order_id=order_id,
        contract=contract.query,
        action=action.upper(),
        quantity=quantity,
        order_type=order_type.upper(),
        limit_price=limit_price,
        aux_price=aux_price,
        tif=tif,
        oca_group=oca_group,
        oca_type=oca_type,
        account=account,
        order_ref=order_ref,
        transmit=transmit,
        parent_id=parent_id,
        outside_rth=outside_rth,
        good_after_time=good_after_time,
        good_till_date=good_till_date,
        trailing_percent=trailing_percent,
        trail_stop_price=trail_stop_price,
        what_if=what_if,
    )
