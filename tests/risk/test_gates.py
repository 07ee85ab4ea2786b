"""The pure gate pipeline: every check reported, exact denials, and properties over random books."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from apps.risk import gates
from apps.risk.derisk import DeriskState, TradingState
from apps.risk.exposure import Holding
from apps.risk.gates import Code, Limit, LimitKind, LimitScope, OpenOrder, OrderSpec, Snapshot

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
AAPL = "inst-aapl"


def limit(kind: LimitKind, value: str, *, scope: LimitScope = LimitScope.TENANT, scope_id: str = "", **kw) -> Limit:
    return Limit(f"id-{kind.value}", 3, kind, scope, Decimal(value), scope_id=scope_id, **kw)


def snapshot(*limits: Limit, **kw) -> Snapshot:
    base = {
        "now": NOW,
        "account_id": "acct",
        "equity": Decimal(100000),
        "peak_equity": Decimal(100000),
        "day_pnl": Decimal(0),
        "holdings": {},
        "open_orders": (),
        "recent_submissions": (),
        "limits": limits,
    }
    return Snapshot(**{**base, **kw})


def buy(quantity: str = "100", price: str | None = "100", side: str = "BUY", **kw) -> OrderSpec:
    return OrderSpec(
        account_id="acct",
        instrument_id=AAPL,
        symbol="AAPL",
        side=side,
        quantity=Decimal(quantity),
        order_type="LMT" if price else "MKT",
        limit_price=Decimal(price) if price else None,
        **kw,
    )


def by_gate(evaluation: gates.Evaluation) -> dict[str, gates.Check]:
    return {check.gate: check for check in evaluation.checks}


def test_every_kind_is_reported_even_without_limits():
    evaluation = gates.evaluate(snapshot(), buy())
    assert [c.gate for c in evaluation.checks] == ["kill_switch", "trading_state", *[k.value for k in LimitKind]]
    assert evaluation.accepted
    assert by_gate(evaluation)["MAX_ORDER_QTY"].detail == "no MAX_ORDER_QTY limit applies"


def test_notional_denial_names_limit_version_value_and_limit():
    evaluation = gates.evaluate(snapshot(limit(LimitKind.MAX_ORDER_NOTIONAL, "5000")), buy("100", "100"))
    refusal = evaluation.refusal()
    assert refusal is not None
    assert (refusal.gate, refusal.limit_id, refusal.limit_version, refusal.value, refusal.limit) == (
        "MAX_ORDER_NOTIONAL",
        "id-MAX_ORDER_NOTIONAL",
        3,
        "10000",
        "5000",
    )
    assert refusal.detail == "Order notional 10000 exceeds limit 5000"
    assert refusal.code == Code.RISK_LIMIT_BREACH


def test_configured_notional_limit_fails_closed_without_a_price():
    evaluation = gates.evaluate(snapshot(limit(LimitKind.MAX_ORDER_NOTIONAL, "5000")), buy("1", None))
    assert by_gate(evaluation)["MAX_ORDER_NOTIONAL"].passed is False


def test_builtin_gross_cap_lets_unpriced_order_through_and_says_so():
    cap = Limit(
        "default:MAX_GROSS_EXPOSURE", 0, LimitKind.MAX_GROSS_EXPOSURE, LimitScope.TENANT, Decimal(130), builtin=True
    )
    check = by_gate(gates.evaluate(snapshot(cap), buy("1", None)))["MAX_GROSS_EXPOSURE"]
    assert check.passed and "no price, not evaluated" in check.detail


def test_gross_exposure_counts_open_orders_as_potential():
    cap = limit(LimitKind.MAX_GROSS_EXPOSURE, "130")
    held = {AAPL: Holding(AAPL, "AAPL", Decimal(1000), Decimal(100))}  # 100 % of equity
    working = (OpenOrder("o1", AAPL, "BUY", Decimal(200)),)  # +20 % potential
    ok = gates.evaluate(snapshot(cap, holdings=held, open_orders=working), buy("100", "100"))  # 130 %
    assert ok.accepted
    assert ok.projected["gross_exposure"] == {"current": "110", "potential": "130", "unpriced": []}
    refused = gates.evaluate(snapshot(cap, holdings=held, open_orders=working), buy("101", "100"))
    assert by_gate(refused)["MAX_GROSS_EXPOSURE"].value == "130.1"
    assert not refused.accepted


def test_reducing_order_passes_over_the_gross_cap():
    cap = limit(LimitKind.MAX_GROSS_EXPOSURE, "100")
    held = {AAPL: Holding(AAPL, "AAPL", Decimal(2000), Decimal(100))}  # 200 %
    assert gates.evaluate(snapshot(cap, holdings=held), buy("500", "100", side="SELL")).accepted
    assert not gates.evaluate(snapshot(cap, holdings=held), buy("1", "100")).accepted


def test_order_rate_is_rate_limited_with_retry_after():
    rate = limit(LimitKind.ORDER_RATE, "2", period_seconds=10)
    recent = (NOW - timedelta(seconds=7), NOW - timedelta(seconds=1))
    refusal = gates.evaluate(snapshot(rate, recent_submissions=recent), buy()).refusal()
    assert refusal is not None and refusal.code == Code.RATE_LIMITED
    assert refusal.retry_after == 3
    older = (NOW - timedelta(seconds=11), NOW - timedelta(seconds=1))
    assert gates.evaluate(snapshot(rate, recent_submissions=older), buy()).accepted


def test_price_band_fails_far_from_last_and_without_last():
    band = limit(LimitKind.PRICE_BAND, "5")
    assert gates.evaluate(snapshot(band, last_prices={AAPL: Decimal(100)}), buy(price="104.99")).accepted
    far = by_gate(gates.evaluate(snapshot(band, last_prices={AAPL: Decimal(100)}), buy(price="106")))["PRICE_BAND"]
    assert (far.passed, far.value) == (False, "6")
    assert not by_gate(gates.evaluate(snapshot(band), buy(price="106")))["PRICE_BAND"].passed


def test_daily_loss_allows_only_reducing_orders():
    loss = limit(LimitKind.DAILY_LOSS, "1000")
    held = {AAPL: Holding(AAPL, "AAPL", Decimal(10), Decimal(100))}
    snap = snapshot(loss, day_pnl=Decimal(-1500), holdings=held)
    assert not gates.evaluate(snap, buy("1")).accepted
    assert gates.evaluate(snap, buy("10", side="SELL")).accepted
    assert not gates.evaluate(snap, buy("11", side="SELL")).accepted  # would flip to short


def test_kill_switch_halt_wins_over_other_failures():
    halt = gates.Halt("kill switch (TENANT)", "ks-1", "runaway algo")
    evaluation = gates.evaluate(snapshot(limit(LimitKind.MAX_ORDER_QTY, "1"), halts=(halt,)), buy())
    refusal = evaluation.refusal()
    assert refusal is not None and refusal.code == Code.KILL_SWITCH_ACTIVE and refusal.limit_id == "ks-1"
    assert not by_gate(evaluation)["MAX_ORDER_QTY"].passed  # still reported


def test_soft_derisk_and_reducing_state_pass_only_reductions():
    held = {AAPL: Holding(AAPL, "AAPL", Decimal(-50), Decimal(100))}
    for state in ({"derisk_state": DeriskState.SOFT_DERISK}, {"trading_state": TradingState.REDUCING}):
        snap = snapshot(holdings=held, **state)
        assert gates.evaluate(snap, buy("50")).accepted
        assert not gates.evaluate(snap, buy("50", side="SELL")).accepted


def test_modification_replaces_its_own_open_order():
    cap = limit(LimitKind.MAX_OPEN_ORDERS, "1")
    working = (OpenOrder("o1", AAPL, "BUY", Decimal(100)),)
    assert not gates.evaluate(snapshot(cap, open_orders=working), buy()).accepted
    assert gates.evaluate(snapshot(cap, open_orders=working), buy(replaces="o1")).accepted


def test_instrument_and_strategy_scopes_apply_only_to_their_orders():
    by_symbol = limit(LimitKind.MAX_ORDER_QTY, "1", scope=LimitScope.INSTRUMENT, scope_id="MSFT")
    by_strategy = limit(LimitKind.MAX_ORDER_NOTIONAL, "1", scope=LimitScope.STRATEGY, scope_id="s1")
    assert gates.evaluate(snapshot(by_symbol, by_strategy), buy()).accepted
    assert not gates.evaluate(snapshot(by_strategy), buy(strategy_id="s1")).accepted


# -- properties ----------------------------------------------------------------------------------

orders = st.tuples(
    st.sampled_from(["BUY", "SELL"]),
    st.integers(min_value=1, max_value=400),
    st.integers(min_value=50, max_value=150),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(orders, min_size=1, max_size=25),
    st.integers(min_value=100, max_value=1000),
    st.integers(min_value=1, max_value=10),
    st.integers(min_value=10, max_value=200),
)
def test_accepted_sequences_never_exceed_limits(sequence, max_position, max_open, max_gross):
    limits = (
        limit(LimitKind.MAX_POSITION_QTY, str(max_position)),
        limit(LimitKind.MAX_OPEN_ORDERS, str(max_open)),
        limit(LimitKind.MAX_GROSS_EXPOSURE, str(max_gross)),
    )
    working: list[OpenOrder] = []
    holdings = {AAPL: Holding(AAPL, "AAPL", Decimal(0), Decimal(100))}
    for index, (side, quantity, price) in enumerate(sequence):
        snap = snapshot(*limits, holdings=holdings, open_orders=tuple(working))
        if gates.evaluate(snap, buy(str(quantity), str(price), side=side)).accepted:
            working.append(OpenOrder(f"o{index}", AAPL, side, Decimal(quantity)))
        signed = [o.signed() for o in working]
        worst = max(
            abs(sum((s for s in signed if s > 0), Decimal(0))), abs(sum((s for s in signed if s < 0), Decimal(0)))
        )
        assert worst <= max_position
        assert len(working) <= max_open
        assert worst * 100 / Decimal(100000) * 100 <= max_gross


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(list(LimitKind)),
    st.integers(min_value=0, max_value=2000),
    st.integers(min_value=0, max_value=2000),
    orders,
    st.integers(min_value=-500, max_value=500),
    st.lists(orders, max_size=5),
)
def test_raising_a_limit_never_turns_a_pass_into_a_fail(kind, value, raise_by, order, position, working):
    held = {AAPL: Holding(AAPL, "AAPL", Decimal(position), Decimal(100))}
    book = tuple(OpenOrder(f"w{i}", AAPL, s, Decimal(q)) for i, (s, q, _) in enumerate(working))
    recent = tuple(NOW - timedelta(seconds=i) for i in range(len(working)))
    extra = {"period_seconds": 10} if kind == LimitKind.ORDER_RATE else {}
    side, quantity, price = order
    spec = buy(str(quantity), str(price), side=side)
    common = {
        "holdings": held,
        "open_orders": book,
        "recent_submissions": recent,
        "day_pnl": Decimal(-position),
        "last_prices": {AAPL: Decimal(100)},
    }
    low = by_gate(gates.evaluate(snapshot(limit(kind, str(value), **extra), **common), spec))[kind.value]
    high = by_gate(gates.evaluate(snapshot(limit(kind, str(value + raise_by), **extra), **common), spec))[kind.value]
    assert not low.passed or high.passed
