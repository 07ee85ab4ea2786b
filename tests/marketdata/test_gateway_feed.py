"""The market data feed for real: API → Redis (`md:wanted`) → the gateway → the simulator over TCP →
ticks in `md:last:<id>` and `ev.l1`; shared lines, IB's 101, the gateway's budget, 1100/1101/1102."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from apps.brokers.ib.gateway import REQUEST_ID_BASE
from apps.brokers.ibsim import IBSimulator
from apps.brokers.models import BrokerAccount, ConnectionStatus
from apps.common.redis import get_redis
from apps.events.prices import L1_STREAM, last_prices
from apps.tenants.scopes import Role
from tests.brokers.ib.conftest import account_status, fast_config, make_ib_account, wait_for
from tests.conftest import make_member

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("instruments")]


class RequestCounter:
    """Counts the reqMktData messages the simulator receives (a spy on its dispatch table)."""

    def __init__(self, sim: IBSimulator) -> None:
        self.sim = sim
        self.con_ids: list[int] = []
        self.req_ids: list[int] = []
        server = sim.server
        original = server.handlers[1]

        def counting(server: Any, session: Any, fields: list[str]) -> None:
            original(server, session, fields)
            self.req_ids.append(int(fields[2]))
            self.con_ids.append(int(fields[3]))  # version, req id, then the contract's con id

        sim.call(lambda: setattr(server, "handlers", {**server.handlers, 1: counting}))

    @property
    def count(self) -> int:
        return self.sim.call(lambda: len(self.con_ids))


def lines_at(sim: IBSimulator) -> list[int]:
    """The con ids of every market data line the simulator serves, over all sessions."""
    return sim.call(lambda: sorted(line.con_id for s in sim.server.sessions for line in s.subs.market.values()))


def line_of(member: Any, symbol: str) -> dict[str, Any]:
    (item,) = member.api.get(f"/marketdata/subscriptions?symbol={symbol}").json_body["items"]
    return item["line"]


def connected_gateway(sim: IBSimulator, tenant: Any, run_gateway: Any, **overrides: Any) -> BrokerAccount:
    account = make_ib_account(tenant, sim)
    run_gateway(fast_config(account, **overrides))
    wait_for(lambda: account_status(account) == ConnectionStatus.CONNECTED)
    return account


def subscribe(member: Any, symbol: str) -> dict[str, Any]:
    response = member.api.post("/marketdata/subscriptions", {"symbol": symbol})
    assert response.status_code == 201, response.json_body
    return response.json_body


def test_subscribe_makes_ticks_flow_to_the_cache_and_ev_l1(start_sim, trader, run_gateway):
    sim = start_sim()
    connected_gateway(sim, trader.tenant, run_gateway)
    assert lines_at(sim) == []
    aapl = subscribe(trader, "AAPL")
    wait_for(lambda: lines_at(sim) == [265598])
    wait_for(lambda: line_of(trader, "AAPL")["state"] == "ACTIVE")
    sim.set_price("AAPL", "191.25", bid="191.24", ask="191.26", size=300)

    def cached() -> Any:
        price = last_prices(client=get_redis(), instrument_ids=[aapl["instrument_id"]]).get(aapl["instrument_id"])
        return price if price is not None and price.last == Decimal("191.25") else None

    price = wait_for(cached)  # what positions and P&L mark with
    assert (price.bid, price.ask, price.bid_size, price.ask_size, price.source) == (
        Decimal("191.24"), Decimal("191.26"), Decimal("300"), Decimal("300"), "ib",
    )  # fmt: skip
    quote = trader.api.get("/marketdata/AAPL/last").json_body
    assert (quote["bid"], quote["ask"], quote["last"]) == ("191.24", "191.26", "191.25")
    assert (quote["bid_size"], quote["ask_size"]) == ("300", "300")  # not ib_async's float "300.0"
    ticks = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in get_redis().xrange(L1_STREAM)]
    assert ticks, "no tick on ev.l1"
    assert {tick["instrument_id"] for tick in ticks} == {aapl["instrument_id"]}
    assert ticks[-1]["symbol"] == "AAPL"
    assert ticks[-1]["last"] == "191.25"
    assert ticks[-1]["at"].endswith("Z")


def test_two_tenants_share_one_line_and_the_last_unsubscribe_cancels_it(start_sim, trader, other_tenant, run_gateway):
    sim = start_sim()
    other = make_member(other_tenant, Role.TRADER)
    connected_gateway(sim, trader.tenant, run_gateway)
    counter = RequestCounter(sim)
    mine = subscribe(trader, "AAPL")
    theirs = subscribe(other, "AAPL")
    wait_for(lambda: line_of(other, "AAPL")["state"] == "ACTIVE")
    assert lines_at(sim) == [265598]
    assert counter.count == 1
    assert trader.api.delete(f"/marketdata/subscriptions/{mine['id']}").status_code == 204
    subscribe(trader, "MSFT")
    wait_for(lambda: lines_at(sim) == [265598, 272093])
    assert counter.count == 2  # AAPL's line was kept for the other tenant
    # IB reports errors by request id alone: ours never share a number with an order id
    assert all(req_id >= REQUEST_ID_BASE for req_id in sim.call(lambda: list(counter.req_ids)))
    assert other.api.delete(f"/marketdata/subscriptions/{theirs['id']}").status_code == 204
    wait_for(lambda: lines_at(sim) == [272093])
    assert counter.count == 2


def test_ib_error_101_marks_the_line_refused_then_a_freed_line_retries_it(start_sim, trader, run_gateway):
    sim = start_sim(market_data_lines=2)  # IB's own limit (other sessions of the login use lines)
    connected_gateway(sim, trader.tenant, run_gateway)
    subscribe(trader, "AAPL")
    msft = subscribe(trader, "MSFT")
    subscribe(trader, "AMZN")
    wait_for(lambda: line_of(trader, "AMZN")["state"] == "REFUSED")
    assert line_of(trader, "AMZN")["reason"] == "IB error 101: Max number of tickers has been reached"
    assert [line_of(trader, symbol)["state"] for symbol in ("AAPL", "MSFT")] == ["ACTIVE", "ACTIVE"]
    assert lines_at(sim) == [265598, 272093]
    assert trader.api.delete(f"/marketdata/subscriptions/{msft['id']}").status_code == 204
    wait_for(lambda: line_of(trader, "AMZN")["state"] == "ACTIVE")
    assert lines_at(sim) == [265598, 3691937]


def test_gateway_budget_refuses_lines_beyond_it_without_asking_ib(start_sim, trader, run_gateway):
    sim = start_sim()
    connected_gateway(sim, trader.tenant, run_gateway, market_data_lines=1)
    counter = RequestCounter(sim)
    subscribe(trader, "AAPL")
    subscribe(trader, "MSFT")
    wait_for(lambda: line_of(trader, "MSFT")["state"] == "REFUSED")
    assert line_of(trader, "MSFT")["reason"] == "line budget of 1 lines per IB login reached at the gateway"
    assert line_of(trader, "AAPL")["state"] == "ACTIVE"  # the older wish keeps the line
    assert counter.con_ids == [265598]


@pytest.mark.parametrize(("data_lost", "requests_after"), [(True, 4), (False, 2)])
def test_1100_then_1101_resubscribes_every_line_and_1102_keeps_them(
    start_sim, trader, run_gateway, data_lost, requests_after
):
    sim = start_sim()
    account = connected_gateway(sim, trader.tenant, run_gateway)
    counter = RequestCounter(sim)
    aapl = subscribe(trader, "AAPL")
    subscribe(trader, "MSFT")
    wait_for(lambda: lines_at(sim) == [265598, 272093])
    assert counter.count == 2
    sim.backend_down(data_lost=data_lost)
    wait_for(lambda: BrokerAccount.objects.get(id=account.id).status_reason.startswith("IB connectivity lost (1100)"))
    sim.backend_up()
    notice = "1101, market data resubscribed" if data_lost else "1102"
    wait_for(lambda: BrokerAccount.objects.get(id=account.id).status_reason == f"IB connectivity restored ({notice})")
    wait_for(lambda: lines_at(sim) == [265598, 272093])
    assert counter.count == requests_after
    assert sorted(counter.con_ids[2:]) == ([265598, 272093] if data_lost else [])
    sim.set_price("AAPL", "188.50")  # ticks flow again on the new lines

    def cached_last() -> Any:
        price = last_prices(client=get_redis(), instrument_ids=[aapl["instrument_id"]]).get(aapl["instrument_id"])
        return price is not None and price.last == Decimal("188.50")

    wait_for(cached_last)
