"""One handler per request message id: parse the fields, ask the broker, answer with IB's end markers.

ib_async waits for an end marker (openOrderEnd, execDetailsEnd, positionEnd, accountDownloadEnd,
contractDetailsEnd, ...) before it returns from most requests, and waits forever when none
comes (its default request timeout is 0), so every handler here answers completely, errors
included. Field layouts are those `ib_async.client.Client` sends at server version 178.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from apps.brokers.ibsim import accounts, messages
from apps.brokers.ibsim.catalogue import ContractQuery, Instrument
from apps.brokers.ibsim.interfaces import OrderRejected, ib_time
from apps.brokers.ibsim.protocol import FieldReader
from apps.brokers.ibsim.requests import parse_place_order, read_contract
from apps.brokers.ibsim.server import GatewayServer, MarketLine, Session, pnl_message, quote_ticks
from apps.brokers.ibsim.state import PENDING_SUBMIT, SimOrder

Handler = Callable[[GatewayServer, Session, list[str]], None]
HANDLERS: dict[int, Handler] = {}


def handles(*message_ids: int) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for message_id in message_ids:
            HANDLERS[message_id] = handler
        return handler

    return register


def _resolve(server: GatewayServer, session: Session, req_id: int, query: ContractQuery) -> Instrument | None:
    try:
        return server.broker.resolve(query)
    except OrderRejected as rejected:
        session.send(messages.error(req_id, rejected.code, rejected.message))
        return None


# -- session ----------------------------------------------------------------------------------


@handles(71)
def start_api(server: GatewayServer, session: Session, fields: list[str]) -> None:
    reader = FieldReader(fields)
    reader.int()  # version 2
    client_id = reader.int()
    server.start_api(session, client_id)


@handles(49)
def req_current_time(server: GatewayServer, session: Session, fields: list[str]) -> None:
    session.send(messages.current_time(int(server.broker.clock.now().timestamp())))


@handles(8)
def req_ids(server: GatewayServer, session: Session, fields: list[str]) -> None:
    last = server.broker.state.last_order_ids.get(session.client_id or 0, 0)
    session.send(messages.next_valid_id(last + 1))


@handles(17)
def req_managed_accounts(server: GatewayServer, session: Session, fields: list[str]) -> None:
    session.send(messages.managed_accounts(list(server.broker.state.accounts)))


@handles(12, 13, 14, 15, 25)
def accepted_without_answer(server: GatewayServer, session: Session, fields: list[str]) -> None:
    """News bulletins, server log level, reqAutoOpenOrders and cancelHistoricalData need no answer."""


@handles(104)
def req_user_info(server: GatewayServer, session: Session, fields: list[str]) -> None:
    session.send(messages.simple(messages.USER_INFO, int(fields[1]), ""))


# -- orders -----------------------------------------------------------------------------------


@handles(3)
def place_order(server: GatewayServer, session: Session, fields: list[str]) -> None:
    request = parse_place_order(fields, session.version)
    server.broker.place(session.client_id or 0, request)


@handles(4)
def cancel_order(server: GatewayServer, session: Session, fields: list[str]) -> None:
    reader = FieldReader(fields)
    reader.int()  # version
    order_id = reader.int()
    server.broker.cancel(session.client_id or 0, order_id)


@handles(58)
def req_global_cancel(server: GatewayServer, session: Session, fields: list[str]) -> None:
    server.broker.global_cancel()


def _send_open_orders(server: GatewayServer, session: Session, orders: list[SimOrder]) -> None:
    catalogue = server.broker.catalogue
    for order in orders:
        instrument = catalogue.get(order.con_id)
        if instrument is not None:
            session.send(messages.open_order(order, instrument) + messages.order_status(order))
    session.send(messages.simple(messages.OPEN_ORDER_END, 1))


def _working(server: GatewayServer) -> list[SimOrder]:
    # Untransmitted orders (transmit=False) stay in TWS and are not reported to the API.
    return [o for o in server.broker.state.orders.values() if not o.is_done and o.status != PENDING_SUBMIT]


@handles(5)
def req_open_orders(server: GatewayServer, session: Session, fields: list[str]) -> None:
    client_id = session.client_id
    # The master client (id 0) sees every client's orders; others see their own.
    orders = [o for o in _working(server) if client_id == 0 or o.client_id == client_id]
    _send_open_orders(server, session, orders)


@handles(16)
def req_all_open_orders(server: GatewayServer, session: Session, fields: list[str]) -> None:
    _send_open_orders(server, session, _working(server))


@handles(99)
def req_completed_orders(server: GatewayServer, session: Session, fields: list[str]) -> None:
    state = server.broker.state
    done = sorted(
        (o for o in state.orders.values() if o.is_done),
        key=lambda o: (o.completed_at or o.created_at, o.perm_id),
    )
    for order in done:
        instrument = server.broker.catalogue.get(order.con_id)
        if instrument is None:
            continue
        completed = ib_time(order.completed_at) if order.completed_at else ""
        session.send(messages.completed_order(order, instrument, order.parent_perm_id, completed))
    session.send(messages.simple(messages.COMPLETED_ORDERS_END))


@handles(7)
def req_executions(server: GatewayServer, session: Session, fields: list[str]) -> None:
    reader = FieldReader(fields)
    reader.int()  # version 3
    req_id = reader.int()
    client_filter = reader.int()
    account_filter = reader.str()
    since_text = reader.str()
    symbol = reader.str().upper()
    sec_type = reader.str().upper()
    exchange = reader.str().upper()
    side = reader.str().upper()
    since = _parse_filter_time(since_text)
    broker = server.broker
    today = broker.clock.now().date()
    sides = {"BUY": "BOT", "SELL": "SLD"}
    for execution in broker.state.executions:
        # Executions are reported for the current day only at this protocol version.
        if execution.time.date() != today:
            continue
        if session.client_id != 0 and execution.client_id != session.client_id:
            continue
        if client_filter and execution.client_id != client_filter:
            continue
        if account_filter and execution.account != account_filter:
            continue
        if since and execution.time < since:
            continue
        instrument = broker.catalogue.get(execution.con_id)
        if instrument is None:
            continue
        if symbol and instrument.symbol != symbol:
            continue
        if sec_type and instrument.sec_type != sec_type:
            continue
        if exchange and execution.exchange != exchange:
            continue
        if side and execution.side != sides.get(side, side):
            continue
        session.send(
            messages.exec_details(req_id, execution, instrument, ib_time(execution.time))
            + messages.commission_report(execution)
        )
    session.send(messages.simple(messages.EXECUTION_DATA_END, 1, req_id))


def _parse_filter_time(text: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    parts = text.replace("-", " ").split()
    at = datetime.strptime(parts[0] + (parts[1] if len(parts) > 1 else "00:00:00") + "+0000", "%Y%m%d%H:%M:%S%z")
    return at.astimezone(UTC)


# -- contracts --------------------------------------------------------------------------------


@handles(9)
def req_contract_details(server: GatewayServer, session: Session, fields: list[str]) -> None:
    reader = FieldReader(fields)
    reader.int()  # version 8
    req_id = reader.int()
    contract = read_contract(reader)
    found = server.broker.catalogue.lookup(contract.query)
    if not found:
        session.send(messages.error(req_id, 200, "No security definition has been found for the request"))
        return
    for instrument in found:
        exchange = contract.query.exchange.upper() or instrument.exchange
        session.send(messages.contract_details(req_id, instrument, exchange))
    session.send(messages.simple(messages.CONTRACT_DATA_END, 1, req_id))


@handles(91)
def req_market_rule(server: GatewayServer, session: Session, fields: list[str]) -> None:
    session.send(messages.market_rule(int(fields[1])))


@handles(81)
def req_matching_symbols(server: GatewayServer, session: Session, fields: list[str]) -> None:
    req_id, pattern = int(fields[1]), fields[2].upper()
    found = [i for i in server.broker.catalogue.instruments if i.symbol.startswith(pattern)][:16]
    out: list[object] = [messages.SYMBOL_SAMPLES, req_id, len(found)]
    for instrument in found:
        out += [instrument.con_id, instrument.symbol, instrument.sec_type, instrument.primary_exchange]
        out += [instrument.currency, 0, instrument.long_name, ""]
    session.send(messages.simple(*out))  # type: ignore[arg-type]


# -- positions and accounts -------------------------------------------------------------------


@handles(61)
def req_positions(server: GatewayServer, session: Session, fields: list[str]) -> None:
    session.subs.positions = True
    state = server.broker.state
    for (account, con_id), position in state.positions.items():
        instrument = server.broker.catalogue.get(con_id)
        if position.quantity and instrument is not None:
            session.send(messages.position(account, instrument, position))
    session.send(messages.simple(messages.POSITION_END, 1))


@handles(64)
def cancel_positions(server: GatewayServer, session: Session, fields: list[str]) -> None:
    session.subs.positions = False


@handles(74)
def req_positions_multi(server: GatewayServer, session: Session, fields: list[str]) -> None:
    req_id, account = int(fields[2]), fields[3]
    session.subs.positions_multi[req_id] = account
    for (acct, con_id), position in server.broker.state.positions.items():
        instrument = server.broker.catalogue.get(con_id)
        if position.quantity and instrument is not None and account in (acct, "", "All"):
            session.send(messages.position_multi(req_id, acct, instrument, position))
    session.send(messages.simple(messages.POSITION_MULTI_END, 1, req_id))


@handles(75)
def cancel_positions_multi(server: GatewayServer, session: Session, fields: list[str]) -> None:
    session.subs.positions_multi.pop(int(fields[2]), None)


def _account(server: GatewayServer, code: str) -> str | None:
    accounts_ = server.broker.state.accounts
    if code in accounts_:
        return code
    return next(iter(accounts_)) if not code and accounts_ else None


@handles(6)
def req_account_updates(server: GatewayServer, session: Session, fields: list[str]) -> None:
    reader = FieldReader(fields)
    reader.int()  # version 2
    subscribe = reader.bool()
    account = _account(server, reader.str())
    if not subscribe:
        session.subs.account = None
        return
    if account is None:
        session.send(messages.error(-1, 321, "Error validating request:-'bB' : cause - Invalid account code"))
        return
    session.subs.account = account
    broker = server.broker
    snap = accounts.snapshot(broker.state, account, broker.mark)
    out = bytearray()
    for key, value, currency in snap.values():
        out += messages.simple(messages.ACCT_VALUE, 2, key, value, currency, account)
    for row in accounts.portfolio(broker.state, account, broker.mark):
        instrument = broker.catalogue.get(row.position.con_id)
        if row.position.quantity and instrument is not None:
            out += messages.portfolio_value(
                account, instrument, row.position, row.market_price, row.market_value, row.unrealized_pnl
            )
    out += messages.simple(messages.ACCT_UPDATE_TIME, 1, broker.clock.now().strftime("%H:%M"))
    out += messages.simple(messages.ACCT_DOWNLOAD_END, 1, account)
    session.send(bytes(out))


@handles(76)
def req_account_updates_multi(server: GatewayServer, session: Session, fields: list[str]) -> None:
    reader = FieldReader(fields)
    reader.int()  # version
    req_id = reader.int()
    requested = reader.str()
    model_code = reader.str()
    broker = server.broker
    codes = list(broker.state.accounts) if requested in ("", "All") else [requested]
    out = bytearray()
    for code in codes:
        if code not in broker.state.accounts:
            continue
        session.subs.account_multi[req_id] = code
        for key, value, currency in accounts.snapshot(broker.state, code, broker.mark).values():
            out += messages.simple(messages.ACCOUNT_UPDATE_MULTI, 1, req_id, code, model_code, key, value, currency)
    out += messages.simple(messages.ACCOUNT_UPDATE_MULTI_END, 1, req_id)
    session.send(bytes(out))


@handles(77)
def cancel_account_updates_multi(server: GatewayServer, session: Session, fields: list[str]) -> None:
    session.subs.account_multi.pop(int(fields[2]), None)


@handles(62)
def req_account_summary(server: GatewayServer, session: Session, fields: list[str]) -> None:
    reader = FieldReader(fields)
    reader.int()  # version
    req_id = reader.int()
    reader.str()  # group ("All")
    tags = {t.strip() for t in reader.str().split(",") if t.strip()}
    broker = server.broker
    out = bytearray()
    for code in broker.state.accounts:
        for key, value, currency in accounts.snapshot(broker.state, code, broker.mark).values():
            ledger = "$LEDGER" in " ".join(tags) and key in ("CashBalance", "NetLiquidationByCurrency")
            if (key in tags or ledger) and currency != "BASE":
                out += messages.simple(messages.ACCOUNT_SUMMARY, 1, req_id, code, key, value, currency)
    out += messages.simple(messages.ACCOUNT_SUMMARY_END, 1, req_id)
    session.send(bytes(out))


@handles(63)
def cancel_account_summary(server: GatewayServer, session: Session, fields: list[str]) -> None:
    """Account summaries are answered once; there is nothing to stop."""


@handles(92)
def req_pnl(server: GatewayServer, session: Session, fields: list[str]) -> None:
    req_id, account = int(fields[1]), fields[2]
    if account not in server.broker.state.accounts:
        session.send(messages.error(req_id, 321, "Error validating request:-'bB' : cause - Invalid account code"))
        return
    session.subs.pnl[req_id] = account
    session.send(pnl_message(server, req_id, account))


@handles(93)
def cancel_pnl(server: GatewayServer, session: Session, fields: list[str]) -> None:
    session.subs.pnl.pop(int(fields[1]), None)


@handles(94)
def req_pnl_single(server: GatewayServer, session: Session, fields: list[str]) -> None:
    req_id, account, con_id = int(fields[1]), fields[2], int(fields[4] or 0)
    broker = server.broker
    position = broker.state.positions.get((account, con_id))
    session.subs.pnl_single[req_id] = (account, con_id)
    if position is None:
        session.send(messages.simple(messages.PNL_SINGLE, req_id, 0, 0, 0, 0, 0))
        return
    price = broker.mark(con_id)
    unrealized = (price - position.average_cost) * position.quantity
    daily = unrealized + position.realized_pnl
    value = position.quantity * price
    session.send(
        messages.simple(messages.PNL_SINGLE, req_id, position.quantity, daily, unrealized, position.realized_pnl, value)
    )


@handles(95)
def cancel_pnl_single(server: GatewayServer, session: Session, fields: list[str]) -> None:
    session.subs.pnl_single.pop(int(fields[1]), None)


# -- market data ------------------------------------------------------------------------------


@handles(59)
def req_market_data_type(server: GatewayServer, session: Session, fields: list[str]) -> None:
    session.subs.market_data_type = int(fields[2])


@handles(1)
def req_mkt_data(server: GatewayServer, session: Session, fields: list[str]) -> None:
    reader = FieldReader(fields)
    reader.int()  # version 11
    req_id = reader.int()
    contract = read_contract(reader)
    if contract.sec_type == "BAG":
        for _ in range(reader.int()):
            reader.skip(4)
    if reader.bool():  # delta-neutral contract
        reader.skip(3)
    reader.str()  # genericTickList
    snapshot = reader.bool()
    reader.bool()  # regulatorySnapshot
    reader.str()  # mktDataOptions
    instrument = _resolve(server, session, req_id, contract.query)
    if instrument is None:
        return
    broker = server.broker
    requested = session.subs.market_data_type
    data_type = requested
    if requested in (2, 4) and broker.schedule.is_open(broker.clock.now()):
        data_type = requested - 1  # frozen data is only frozen while the market is closed
    if not snapshot:
        if len(session.subs.market) >= server.market_data_lines:
            session.send(messages.error(req_id, 101, "Max number of tickers has been reached"))
            return
        session.subs.market[req_id] = MarketLine(req_id, instrument.con_id, data_type)
    quote = broker.quote(instrument.con_id)
    out = messages.tick_req_params(req_id, instrument.min_tick, "9c0001")
    out += messages.market_data_type(req_id, data_type)
    out += quote_ticks(req_id, quote, data_type)
    close_tick = 75 if data_type in (3, 4) else 9
    out += messages.tick_price(req_id, close_tick, instrument.reference_price, Decimal(0))
    out += messages.tick_string(req_id, 45, str(int(broker.clock.now().timestamp())))
    if snapshot:
        out += messages.simple(messages.TICK_SNAPSHOT_END, 1, req_id)
    session.send(out)


@handles(2)
def cancel_mkt_data(server: GatewayServer, session: Session, fields: list[str]) -> None:
    session.subs.market.pop(int(fields[2]), None)


BAR_UNITS = {"sec": 1, "secs": 1, "min": 60, "mins": 60, "hour": 3600, "hours": 3600, "day": 86400}
BAR_UNITS |= {"week": 7 * 86400, "month": 30 * 86400}
DURATION_UNITS = {"S": 1, "D": 86400, "W": 7 * 86400, "M": 30 * 86400, "Y": 365 * 86400}
MAX_BARS = 2_000


@handles(20)
def req_historical_data(server: GatewayServer, session: Session, fields: list[str]) -> None:
    """Synthetic bars around the current price: enough for charts and ib_async's Watchdog probe."""
    reader = FieldReader(fields)
    req_id = reader.int()
    contract = read_contract(reader)
    reader.bool()  # includeExpired
    end_text = reader.str()
    bar_size = reader.str()
    duration = reader.str()
    reader.str()  # useRTH
    reader.str()  # whatToShow
    format_date = reader.int(1)
    instrument = _resolve(server, session, req_id, contract.query)
    if instrument is None:
        return
    count_text, _, unit = bar_size.partition(" ")
    bar_seconds = int(count_text or 1) * BAR_UNITS.get(unit.strip().lower(), 60)
    span_text, _, span_unit = duration.partition(" ")
    span = int(span_text or 1) * DURATION_UNITS.get(span_unit.strip().upper(), 86400)
    bars = max(1, min(MAX_BARS, span // max(bar_seconds, 1)))
    broker = server.broker
    end = broker.clock.now() if not end_text else _parse_filter_time(end_text.split(" ")[0] + " 00:00:00")
    end = end or broker.clock.now()
    rng = random.Random(f"{instrument.con_id}:{req_id}")  # noqa: S311 (synthetic data, not security)
    price = float(broker.mark(instrument.con_id))
    rows: list[object] = []
    start = end - timedelta(seconds=bar_seconds * bars)
    for index in range(bars):
        at = start + timedelta(seconds=bar_seconds * index)
        open_ = price
        close = price * (1 + rng.gauss(0, 0.001))
        high, low = max(open_, close) * 1.0005, min(open_, close) * 0.9995
        if bar_seconds >= 86400:
            date = at.strftime("%Y%m%d")
        elif format_date == 2:
            date = str(int(at.timestamp()))
        else:
            date = at.strftime("%Y%m%d %H:%M:%S") + " UTC"
        rows += [date, round(open_, 4), round(high, 4), round(low, 4), round(close, 4), 1000, round(close, 4), 10]
        price = close
    start_text = start.strftime("%Y%m%d %H:%M:%S")
    end_text = end.strftime("%Y%m%d %H:%M:%S")
    session.send(messages.simple(messages.HISTORICAL_DATA, req_id, start_text, end_text, bars, *rows))  # type: ignore[arg-type]


@handles(87)
def req_head_timestamp(server: GatewayServer, session: Session, fields: list[str]) -> None:
    session.send(messages.simple(88, int(fields[1]), "20000103 14:30:00"))
