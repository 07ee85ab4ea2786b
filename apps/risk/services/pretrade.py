"""Pre-trade evaluation: build the snapshot from the database and run the gates and the rules.

`pretrade_evaluate` is what the orders app calls, inside its placing (or modifying) transaction
with `lock=True`. It first takes a transaction-scoped advisory lock on the account, so that
placements on one account are serialised from the moment their snapshot is read until their
order row commits: two orders that each pass alone but together breach a limit cannot both be
accepted (the second one reads the first one's open order). The lock is an advisory one, not a
row lock on the account, so broker status updates of the account never wait for a placement.

Orders sit above this app, so risk never reads the order tables: the caller hands in a
`BookProvider` that returns the open orders and the recent submissions, called after the lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import structlog
from django.db import connection
from django.db.models import Q
from django.utils import timezone
from prometheus_client import Counter, Histogram

from apps.brokers.models import BrokerAccount, Instrument
from apps.common.errors import ComplianceBlocked, KillSwitchActive, RateLimited, RiskLimitBreach
from apps.common.redis import get_redis
from apps.compliance import rules
from apps.compliance.calendars import ALWAYS_OPEN, session
from apps.compliance.services import compliance_snapshot
from apps.events.prices import last_prices
from apps.portfolio.models import PnlSnapshot, Position
from apps.risk import derisk, gates
from apps.risk.config import defaults
from apps.risk.exposure import Holding
from apps.risk.models import AccountRisk, CircuitBreaker, KillSwitch, RiskLimit, RiskOverride
from apps.tenants.models import Tenant

log = structlog.get_logger(__name__)
EVALUATIONS = Histogram("oms_risk_evaluation_seconds", "Time to build the risk snapshot and run every gate")
DENIALS = Counter("oms_risk_denials_total", "Orders refused before placement", ["code", "gate"])
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class BookOrder:
    """A working order as risk sees it (handed over by the orders app)."""

    order_id: UUID
    account_id: UUID
    instrument_id: UUID
    side: str
    order_type: str
    remaining: Decimal
    limit_price: Decimal | None
    strategy_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class Book:
    """The account's open orders, the tenant's working orders in the order's instrument (for the
    wash-trade rule) and the account's order submissions since `BookQuery.since`."""

    open_orders: tuple[BookOrder, ...]
    submissions: tuple[datetime, ...]


@dataclass(frozen=True, slots=True)
class BookQuery:
    """The book of one account; `instrument_id` also asks for the tenant's working orders in it."""

    account_id: UUID
    instrument_id: UUID | None
    since: datetime
    tenant_id: UUID | None = None  # the account's tenant, when the caller knows it (saves a query)


BookProvider = Callable[[BookQuery], Book]


@dataclass(frozen=True, slots=True)
class OrderSpec:
    """The order to evaluate; a modification names the order it `replaces` and its new remaining."""

    instrument: Instrument
    side: str
    quantity: Decimal
    order_type: str
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    strategy_id: UUID | None = None
    outside_rth: bool = False
    replaces: UUID | None = None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Every check (risk and compliance) and the projected figures of API.md's preview."""

    accepted: bool
    checks: list[dict[str, Any]]
    projected: dict[str, Any]


def account_lock(*, account_id: UUID) -> None:
    """Serialise risk decisions on one account until the end of the caller's transaction."""
    key = (UUID(str(account_id)).int >> 64) - (1 << 63)  # a signed 64-bit key from the UUID
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def account_calendar(account: BrokerAccount, row: AccountRisk | None) -> str:
    """The calendar an account follows: its own setting, else the default of its broker."""
    if row is not None and row.calendar:
        return row.calendar
    return defaults().calendars.get(account.broker, ALWAYS_OPEN)


def _limits(*, tenant_id: UUID, account_id: UUID, order: OrderSpec, now: datetime) -> list[gates.Limit]:
    instrument = order.instrument
    scoped = Q(scope=gates.LimitScope.TENANT) | Q(scope=gates.LimitScope.ACCOUNT, scope_id=str(account_id))
    scoped |= Q(scope=gates.LimitScope.INSTRUMENT, scope_id__in=[str(instrument.id), instrument.symbol.upper()])
    if order.strategy_id is not None:
        scoped |= Q(scope=gates.LimitScope.STRATEGY, scope_id=str(order.strategy_id))
    rows = list(RiskLimit.objects.filter(scoped, tenant_id=tenant_id, enabled=True).order_by("kind", "scope", "id"))
    overrides = {
        override.limit_id: override
        for override in RiskOverride.objects.filter(
            limit__in=[row.id for row in rows], revoked_at__isnull=True, valid_from__lte=now, valid_until__gt=now
        )
        .filter(Q(account__isnull=True) | Q(account_id=account_id))
        .order_by("created_at")  # the newest active override of a limit wins
    }
    limits = []
    for row in rows:
        override = overrides.get(row.id)
        limits.append(
            gates.Limit(
                id=str(row.id),
                version=row.version,
                kind=gates.LimitKind(row.kind),
                scope=gates.LimitScope(row.scope),
                scope_id=row.scope_id,
                value=override.value if override else row.value,
                period_seconds=row.period_seconds,
                override_id=str(override.id) if override else None,
            )
        )
    return limits


def _builtin_limits(limits: list[gates.Limit], *, calendar: str, now: datetime) -> list[gates.Limit]:
    """Spec 003's hard cap when the tenant set no account-wide gross limit, and the regime's cap."""
    config = defaults()
    extra = []
    account_wide = (gates.LimitScope.TENANT, gates.LimitScope.ACCOUNT)
    if not any(limit.kind == gates.LimitKind.MAX_GROSS_EXPOSURE and limit.scope in account_wide for limit in limits):
        extra.append(
            gates.Limit(
                "default:MAX_GROSS_EXPOSURE",
                0,
                gates.LimitKind.MAX_GROSS_EXPOSURE,
                gates.LimitScope.TENANT,
                config.max_gross_exposure_pct,
                builtin=True,
            )
        )
    if calendar != ALWAYS_OPEN:
        regime = derisk.regime(now, session(calendar, now), config.derisk)
        cap = config.derisk.regime_caps.get(regime.value)
        if cap is not None:
            extra.append(
                gates.Limit(
                    f"regime:{regime.value}",
                    0,
                    gates.LimitKind.MAX_GROSS_EXPOSURE,
                    gates.LimitScope.TENANT,
                    cap,
                    builtin=True,
                )
            )
    return limits + extra


@dataclass(frozen=True, slots=True)
class Marks:
    """An account's positions valued: holdings for the gates, equity and P&L figures."""

    holdings: dict[str, Holding]
    last: dict[str, Decimal]
    equity: Decimal
    day_pnl: Decimal
    unrealized: Decimal


def account_marks(
    *, account: BrokerAccount, row: AccountRisk | None, now: datetime, extra: tuple[str, ...] = ()
) -> Marks:
    """Value the account's positions at the cached last prices (at cost when a price is missing)."""
    positions = list(Position.objects.filter(account=account).select_related("instrument"))
    prices = last_prices(client=get_redis(), instrument_ids=[*(str(p.instrument_id) for p in positions), *extra])
    last = {key: price.last for key, price in prices.items()}
    return marks_of(positions=positions, last=last, yesterday=_yesterday_unrealized(account, now), row=row, now=now)


def _yesterday_unrealized(account: BrokerAccount, now: datetime) -> Decimal | None:
    return (
        PnlSnapshot.objects.filter(account=account, day__lt=now.astimezone(UTC).date())
        .order_by("-day")
        .values_list("unrealized_pnl", flat=True)
        .first()
    )


def marks_of(
    *,
    positions: list[Position],
    last: dict[str, Decimal],
    yesterday: Decimal | None,
    row: AccountRisk | None,
    now: datetime,
) -> Marks:
    """Value positions (their instruments loaded) at `last` prices; no I/O."""
    today = now.astimezone(UTC).date()
    holdings: dict[str, Holding] = {}
    realized = realized_today = unrealized = ZERO
    for position in positions:
        key = str(position.instrument_id)
        multiplier = position.instrument.multiplier
        price = last.get(key)
        realized += position.realized_pnl
        if position.realized_day == today:
            realized_today += position.realized_today
        if price is not None and position.quantity:
            unrealized += (price - position.avg_cost) * position.quantity * multiplier
        mark = price if price is not None else (position.avg_cost or None)
        holdings[key] = Holding(key, position.symbol, position.quantity, mark, multiplier)
    capital = row.capital if row is not None and row.capital is not None else defaults().default_capital
    day_pnl = realized_today + unrealized - (yesterday or ZERO)
    return Marks(holdings, last, capital + realized + unrealized, day_pnl, unrealized)


def _halts(
    *, tenant_id: UUID, account_id: UUID, order: OrderSpec, trading_state: str | None
) -> tuple[list[gates.Halt], list[str]]:
    halts: list[gates.Halt] = []
    reducing: list[str] = []
    switches = Q(scope=KillSwitch.Scope.TENANT) | Q(scope=KillSwitch.Scope.ACCOUNT, scope_id=str(account_id))
    if order.strategy_id is not None:
        switches |= Q(scope=KillSwitch.Scope.STRATEGY, scope_id=str(order.strategy_id))
    for switch in KillSwitch.objects.filter(switches, tenant_id=tenant_id, active=True).order_by("engaged_at"):
        halts.append(gates.Halt(f"kill switch ({switch.scope})", str(switch.id), switch.reason))
    breakers = CircuitBreaker.objects.filter(
        Q(account__isnull=True) | Q(account_id=account_id), tenant_id=tenant_id, state=CircuitBreaker.State.OPEN
    ).order_by("tripped_at")
    for breaker in breakers:
        if breaker.action == derisk.TradingState.HALTED:
            halts.append(gates.Halt(f"circuit breaker {breaker.kind}", str(breaker.id), breaker.reason))
        else:
            reducing.append(f"circuit breaker {breaker.kind} open: {breaker.reason}")
    if trading_state == derisk.TradingState.HALTED:
        halts.append(gates.Halt("trading state", str(account_id), "account set to HALTED by a risk manager"))
    elif trading_state == derisk.TradingState.REDUCING:
        reducing.append("account set to REDUCING by a risk manager")
    return halts, reducing


def derisk_state_of(*, row: AccountRisk | None, calendar: str, now: datetime) -> derisk.DeriskStep | None:
    """The account's de-risk state now (None for accounts on an always-open calendar)."""
    if calendar == ALWAYS_OPEN:
        return None
    previous = derisk.DeriskState(row.derisk_state) if row is not None else derisk.DeriskState.NORMAL
    return derisk.derisk_next(
        previous=previous, previous_day=row.derisk_day if row is not None else None, now=now, config=defaults().derisk
    )


def _compliance_checks(snapshot: rules.Snapshot, candidate: rules.Candidate) -> list[gates.Check]:
    return [
        gates.Check(
            check.gate,
            check.passed,
            check.detail,
            gates.Code.COMPLIANCE_BLOCKED,
            limit_id=check.rule_id,
            limit_version=check.rule_version,
            inputs=check.inputs,
        )
        for check in rules.evaluate(snapshot, candidate)
    ]


def pretrade_evaluate(
    *,
    tenant: Tenant,
    account: BrokerAccount,
    order: OrderSpec,
    book: BookProvider,
    lock: bool,
    now: datetime | None = None,
) -> Evaluation:
    """Evaluate every gate for `order`; with `lock`, serialise on the account and raise the refusal.

    With `lock=True` (placing, modifying: inside the caller's transaction) a refusal raises
    KillSwitchActive (423), ComplianceBlocked (422), RateLimited (429) or RiskLimitBreach (422),
    in that precedence; with `lock=False` (a preview) every check is returned.
    """
    with EVALUATIONS.time():
        now = now or timezone.now()
        instrument = order.instrument
        # Configuration, prices and yesterday's P&L are read before the lock: placements do not
        # change them, and the lock is held (by every placement on the account, one after the
        # other) only for what they do change: the book, the positions, and the halts (kill
        # switches, breakers, the trading state), which stay inside so that a halt set while an
        # order waits for the lock stops it.
        row = AccountRisk.objects.filter(account=account).first()
        calendar = account_calendar(account, row)
        limits = _limits(tenant_id=tenant.id, account_id=account.id, order=order, now=now)
        limits = _builtin_limits(limits, calendar=calendar, now=now)
        longest = max(
            (limit.period_seconds or 0 for limit in limits if limit.kind == gates.LimitKind.ORDER_RATE), default=0
        )
        asked = {str(i) for i in Position.objects.filter(account=account).values_list("instrument_id", flat=True)}
        asked.add(str(instrument.id))
        prices = last_prices(client=get_redis(), instrument_ids=asked)
        yesterday = _yesterday_unrealized(account, now)
        compliance = compliance_snapshot(
            tenant_id=tenant.id,
            account_id=account.id,
            symbol=instrument.symbol,
            calendar=calendar,
            now=now,
            working=(),
        )
        if lock:
            account_lock(account_id=account.id)
        held = book(BookQuery(account.id, instrument.id, since=now - timedelta(seconds=longest), tenant_id=tenant.id))
        positions = list(Position.objects.filter(account=account).select_related("instrument"))
        missing = [str(p.instrument_id) for p in positions if str(p.instrument_id) not in asked]
        if missing:  # a position opened while this order waited for the lock
            prices |= last_prices(client=get_redis(), instrument_ids=missing)
        last = {key: price.last for key, price in prices.items()}
        marks = marks_of(positions=positions, last=last, yesterday=yesterday, row=row, now=now)
        peak = max(row.peak_equity if row is not None else ZERO, marks.equity)
        if lock and row is not None and marks.equity > row.peak_equity:
            AccountRisk.objects.filter(account=account, peak_equity__lt=marks.equity).update(peak_equity=marks.equity)
        trading_state = row.trading_state if row is not None else None
        if lock:  # a halt set while this order waited for the lock stops it
            trading_state = AccountRisk.objects.filter(account=account).values_list("trading_state", flat=True).first()
        halts, reducing = _halts(tenant_id=tenant.id, account_id=account.id, order=order, trading_state=trading_state)
        step = derisk_state_of(row=row, calendar=calendar, now=now)
        spec = gates.OrderSpec(
            account_id=str(account.id),
            instrument_id=str(instrument.id),
            symbol=instrument.symbol,
            side=order.side,
            quantity=order.quantity,
            order_type=order.order_type,
            limit_price=order.limit_price,
            stop_price=order.stop_price,
            strategy_id=str(order.strategy_id) if order.strategy_id else None,
            multiplier=instrument.multiplier,
            replaces=str(order.replaces) if order.replaces else None,
        )
        snapshot = gates.Snapshot(
            now=now,
            account_id=str(account.id),
            equity=marks.equity,
            peak_equity=peak,
            day_pnl=marks.day_pnl,
            holdings=marks.holdings,
            open_orders=tuple(
                gates.OpenOrder(str(o.order_id), str(o.instrument_id), o.side, o.remaining)
                for o in held.open_orders
                if o.account_id == account.id
            ),
            recent_submissions=held.submissions,
            limits=tuple(limits),
            last_prices=marks.last,
            derisk_state=step.state if step else derisk.DeriskState.NORMAL,
            halts=tuple(halts),
            reducing_reasons=tuple(reducing),
        )
        result = gates.evaluate(snapshot, spec)
        working = [
            rules.WorkingOrder(
                str(o.order_id), str(o.account_id), str(o.instrument_id), o.side, o.order_type, o.limit_price
            )
            for o in held.open_orders
            if o.instrument_id == instrument.id
        ]
        candidate = rules.Candidate(
            account_id=str(account.id),
            instrument_id=str(instrument.id),
            symbol=instrument.symbol,
            side=order.side,
            order_type=order.order_type,
            limit_price=order.limit_price,
            outside_rth=order.outside_rth,
            replaces=spec.replaces,
        )
        compliance = replace(compliance, working=tuple(working))
        evaluation = gates.Evaluation((*result.checks, *_compliance_checks(compliance, candidate)), result.projected)
    if lock:
        refuse(evaluation, account=account)
    return Evaluation(evaluation.accepted, [check.as_dict() for check in evaluation.checks], dict(evaluation.projected))


def refuse(evaluation: gates.Evaluation, *, account: BrokerAccount) -> None:
    """Raise the refusal an evaluation decides (nothing when every check passed)."""
    check = evaluation.refusal()
    if check is None:
        return
    DENIALS.labels(code=check.code.value, gate=check.gate).inc()
    failed = [c.gate for c in evaluation.checks if not c.passed]
    log.info("risk.denied", code=check.code.value, gate=check.gate, account=account.account_code, failed=failed)
    if check.code == gates.Code.KILL_SWITCH_ACTIVE:
        raise KillSwitchActive(
            f"{check.detail} (account {account.account_code})",
            details={"gate": check.gate, "halted_by": check.limit_id, **dict(check.inputs)},
            hint="Only cancels pass while halted; a risk manager releases the kill switch or resets the breaker",
        )
    details = {
        "gate": check.gate,
        "limit_id": check.limit_id,
        "limit_version": check.limit_version,
        "value": check.value,
        "limit": check.limit,
        "inputs": dict(check.inputs),
        "failed_checks": failed,
    }
    if check.code == gates.Code.COMPLIANCE_BLOCKED:
        raise ComplianceBlocked(
            f"{check.detail} (account {account.account_code})",
            details={
                "rule": check.gate,
                "rule_id": check.limit_id,
                "rule_version": check.limit_version,
                "inputs": dict(check.inputs),
                "failed_checks": failed,
            },
            hint="Ask a compliance officer if this rule should not apply",
        )
    if check.code == gates.Code.RATE_LIMITED:
        raise RateLimited(
            f"{check.detail} (account {account.account_code})", retry_after=check.retry_after or 1, details=details
        )
    raise RiskLimitBreach(
        f"{check.detail} for account {account.account_code}",
        details=details,
        hint="Reduce quantity or ask a risk manager for an override",
    )
