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

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar
from uuid import UUID

import orjson
import redis
import structlog
from django.db import connection, models, router
from django.db.models import Q, QuerySet
from django.utils import timezone
from prometheus_client import Counter, Histogram

from apps.brokers.models import BrokerAccount, Instrument
from apps.common.errors import ComplianceBlocked, KillSwitchActive, RateLimited, RiskLimitBreach
from apps.common.redis import get_redis
from apps.compliance import calendars, rules
from apps.compliance.calendars import ALWAYS_OPEN, session
from apps.compliance.models import ComplianceRule, RestrictedEntry
from apps.events.prices import last_price_key
from apps.portfolio.models import PnlSnapshot, Position
from apps.risk import derisk, gates
from apps.risk.config import defaults
from apps.risk.exposure import Holding
from apps.risk.models import AccountRisk, CircuitBreaker, KillSwitch, RiskLimit, RiskOverride
from apps.risk.sessions import calendar_for
from apps.tenants.models import Tenant

log = structlog.get_logger(__name__)
EVALUATIONS = Histogram("oms_risk_evaluation_seconds", "Time to build the risk snapshot and run every gate")
DENIALS = Counter("oms_risk_denials_total", "Orders refused before placement", ["code", "gate"])
ZERO = Decimal(0)
M = TypeVar("M", bound=models.Model)


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
class SqlBook:
    """A book provider that can also be read inside the snapshot's one statement under the lock.

    `sql(query)` gives a scalar subquery returning the book as JSON text, with its parameters;
    `parse(text, query)` turns that text into the Book. Called on its own, it runs the subquery.
    """

    sql: Callable[[BookQuery], tuple[str, list[object]]]
    parse: Callable[[str, BookQuery], Book]

    def __call__(self, query: BookQuery) -> Book:
        fragment, params = self.sql(query)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT ({fragment})::text", params)
            (text,) = cursor.fetchone()
        return self.parse(text, query)


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


ACCOUNT_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s)"


def account_lock_key(account_id: UUID) -> int:
    return (UUID(str(account_id)).int >> 64) - (1 << 63)  # a signed 64-bit key from the UUID


def account_lock(*, account_id: UUID) -> None:
    """Serialise risk decisions on one account until the end of the caller's transaction."""
    with connection.cursor() as cursor:
        cursor.execute(ACCOUNT_LOCK_SQL, [account_lock_key(account_id)])


def last_marks(instrument_ids: Iterable[str]) -> dict[str, Decimal]:
    """The cached last price of each instrument that has one, in one Redis round trip.

    Only the `last` field of each hash (what valuing and the gates use): a pipeline of HGET,
    about half the time of reading and parsing whole hashes for an account of 500 positions.
    Nothing when Redis is away (positions are then valued at cost, as without a price)."""
    ids = list(dict.fromkeys(instrument_ids))
    if not ids:
        return {}
    try:
        pipe = get_redis().pipeline(transaction=False)
        for instrument_id in ids:
            pipe.hget(last_price_key(instrument_id), "last")
        values = pipe.execute()
    except redis.RedisError:
        return {}
    found: dict[str, Decimal] = {}
    for instrument_id, value in zip(ids, values, strict=True):
        if not value:
            continue
        try:
            price = Decimal(value.decode() if isinstance(value, bytes) else str(value))
        except InvalidOperation:
            continue
        if price.is_finite():
            found[instrument_id] = price
    return found


def account_calendar(account: BrokerAccount, row: AccountRisk | None) -> str:
    """The calendar an account follows: its own setting, else the default of its broker."""
    return calendar_for(account, row)


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
class PositionMark:
    """What valuing a position reads of it (and of its instrument)."""

    instrument_id: UUID | str  # read as text under the lock (keys are text anyway)
    symbol: str
    quantity: Decimal
    avg_cost: Decimal
    realized_pnl: Decimal
    realized_today: Decimal
    realized_day: date | None
    multiplier: Decimal


def position_marks(positions: QuerySet[Position]) -> list[PositionMark]:
    """The positions as rows of the columns `marks_of` needs: no model instances, no timestamps to
    parse, which keeps the read under the account lock short for accounts with hundreds of them."""
    fields = ("instrument_id", "symbol", "quantity", "avg_cost", "realized_pnl", "realized_today", "realized_day")
    return [PositionMark(*row) for row in positions.values_list(*fields, "instrument__multiplier")]


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
    positions = position_marks(Position.objects.filter(account=account))
    last = last_marks([*(str(p.instrument_id) for p in positions), *extra])
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
    positions: list[PositionMark],
    last: dict[str, Decimal],
    yesterday: Decimal | None,
    row: AccountRisk | None,
    now: datetime,
) -> Marks:
    """Value positions at `last` prices; no I/O."""
    today = now.astimezone(UTC).date()
    holdings: dict[str, Holding] = {}
    realized = realized_today = unrealized = ZERO
    for position in positions:
        key = str(position.instrument_id)
        multiplier = position.multiplier
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


@dataclass(frozen=True, slots=True)
class Locked:
    """What the gates read under the account lock (in one statement): what placements, fills and
    risk managers change while an order waits for the lock."""

    book: Book | None  # None when the provider cannot be read in the statement (read after it)
    positions: list[PositionMark]
    trading_state: str | None
    switches: list[tuple[str, str, str]]  # id, scope, reason: active kill switches in scope
    breakers: list[tuple[str, str, str, str]]  # id, kind, action, reason: open breakers in scope


def _positions_sql() -> str:
    position, instrument = Position._meta.db_table, Instrument._meta.db_table
    # Decimals travel as text: JSON numbers would be read back as floats.
    return (
        "SELECT coalesce(json_agg(json_build_array(p.instrument_id, p.symbol, p.quantity::text,"  # noqa: S608
        " p.avg_cost::text, p.realized_pnl::text, p.realized_today::text, p.realized_day, i.multiplier::text)),"
        f" '[]') FROM {position} p JOIN {instrument} i ON i.id = p.instrument_id WHERE p.account_id = %s"
    )


def _halts_sql() -> tuple[str, str, str]:
    risk, switch, breaker = AccountRisk._meta.db_table, KillSwitch._meta.db_table, CircuitBreaker._meta.db_table
    return (
        f"SELECT trading_state FROM {risk} WHERE account_id = %s",  # noqa: S608
        "SELECT coalesce(json_agg(json_build_array(id, scope, reason) ORDER BY engaged_at), '[]')"  # noqa: S608
        f" FROM {switch} WHERE tenant_id = %s AND active AND (scope = 'TENANT'"
        " OR (scope = 'ACCOUNT' AND scope_id = %s) OR (scope = 'STRATEGY' AND scope_id = %s))",
        "SELECT coalesce(json_agg(json_build_array(id, kind, action, reason) ORDER BY tripped_at), '[]')"  # noqa: S608
        f" FROM {breaker} WHERE tenant_id = %s AND state = 'OPEN' AND (account_id IS NULL OR account_id = %s)",
    )


def json_columns(model: type[models.Model], alias: str) -> str:
    """The concrete columns of `model` (as `alias`) as a JSON array; decimals as text (JSON numbers
    would be read back as floats). `json_row` turns the array back into an instance."""
    return "json_build_array({})".format(
        ", ".join(
            f"{alias}.{field.column}::text" if isinstance(field, models.DecimalField) else f"{alias}.{field.column}"
            for field in model._meta.concrete_fields
        )
    )


def json_row(model: type[M], values: list[Any]) -> M:
    """The instance a `json_columns` array describes, as if loaded by the ORM."""
    fields = model._meta.concrete_fields
    row: list[Any] = []
    for field, value in zip(fields, values, strict=True):
        if value is not None:
            if isinstance(field, models.DecimalField):
                value = Decimal(value)
            elif isinstance(field, models.DateTimeField):
                value = datetime.fromisoformat(value)
            elif isinstance(field, models.DateField):
                value = date.fromisoformat(value)
            elif isinstance(field, models.UUIDField) or (
                field.is_relation and isinstance(field.target_field, models.UUIDField)
            ):
                value = UUID(value)
        row.append(value)
    return model.from_db(router.db_for_read(model), [field.attname for field in fields], row)


@dataclass(frozen=True, slots=True)
class Config:
    """What the gates read before the lock (placements do not change it), in one statement."""

    row: AccountRisk | None
    limits: list[gates.Limit]
    position_ids: set[str]
    yesterday: Decimal | None
    restrictions: tuple[rules.Restriction, ...]
    compliance_rules: tuple[rules.Rule, ...]


def config_read(*, tenant_id: UUID, account_id: UUID, order: OrderSpec, now: datetime) -> Config:
    """The account's risk row, its limits in scope of the order (with their active overrides), the
    instruments it holds (to fetch their prices before the lock), yesterday's unrealized P&L and
    the compliance restrictions and rules: what `_limits`, `_yesterday_unrealized` and
    `compliance_snapshot` read, in one round trip."""
    instrument = order.instrument
    scope = gates.LimitScope
    sql = (
        "SELECT"  # noqa: S608
        f" (SELECT {json_columns(AccountRisk, 'r')} FROM {AccountRisk._meta.db_table} r WHERE r.account_id = %s)::text,"
        " (SELECT coalesce(json_agg(json_build_array(l.id, l.version, l.kind, l.scope, l.scope_id, l.value::text,"
        " l.period_seconds, o.id, o.value::text) ORDER BY l.kind, l.scope, l.id), '[]')"
        f" FROM {RiskLimit._meta.db_table} l LEFT JOIN LATERAL (SELECT o.id, o.value"
        f" FROM {RiskOverride._meta.db_table} o WHERE o.limit_id = l.id AND o.revoked_at IS NULL"
        " AND o.valid_from <= %s AND o.valid_until > %s AND (o.account_id IS NULL OR o.account_id = %s)"
        " ORDER BY o.created_at DESC LIMIT 1) o ON true"
        " WHERE l.tenant_id = %s AND l.enabled AND (l.scope = %s OR (l.scope = %s AND l.scope_id = %s)"
        " OR (l.scope = %s AND l.scope_id IN (%s, %s)) OR (l.scope = %s AND l.scope_id = %s)))::text,"
        " (SELECT coalesce(json_agg(p.instrument_id), '[]')"
        f" FROM {Position._meta.db_table} p WHERE p.account_id = %s)::text,"
        f" (SELECT s.unrealized_pnl::text FROM {PnlSnapshot._meta.db_table} s"
        " WHERE s.account_id = %s AND s.day < %s ORDER BY s.day DESC LIMIT 1),"
        " (SELECT coalesce(json_agg(json_build_array(e.id, e.kind, e.value, e.reason, e.valid_from, e.valid_until)),"
        f" '[]') FROM {RestrictedEntry._meta.db_table} e WHERE e.tenant_id = %s"
        " AND ((e.kind = %s AND e.value = %s) OR (e.kind = %s AND e.value = %s)))::text,"
        " (SELECT coalesce(json_agg(json_build_array(c.id, c.version, c.kind, c.params) ORDER BY c.created_at), '[]')"
        f" FROM {ComplianceRule._meta.db_table} c WHERE c.tenant_id = %s AND c.enabled)::text"
    )
    strategy = str(order.strategy_id) if order.strategy_id is not None else None
    params: list[object] = [
        account_id,
        now,
        now,
        account_id,
        tenant_id,
        scope.TENANT.value,
        scope.ACCOUNT.value,
        str(account_id),
        scope.INSTRUMENT.value,
        str(instrument.id),
        instrument.symbol.upper(),
        scope.STRATEGY.value,
        strategy,
        account_id,
        account_id,
        now.astimezone(UTC).date(),
        tenant_id,
        rules.RestrictionKind.SYMBOL.value,
        instrument.symbol.upper(),
        rules.RestrictionKind.ACCOUNT.value,
        str(account_id),
        tenant_id,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        risk_row, limits_text, held_text, yesterday, restricted_text, rules_text = cursor.fetchone()
    limits = [
        gates.Limit(
            id=limit_id,
            version=version,
            kind=gates.LimitKind(kind),
            scope=gates.LimitScope(limit_scope),
            scope_id=scope_id,
            value=Decimal(override_value if override_id is not None else value),
            period_seconds=period_seconds,
            override_id=override_id,
        )
        for limit_id, version, kind, limit_scope, scope_id, value, period_seconds, override_id, override_value in (
            orjson.loads(limits_text)
        )
    ]
    restrictions = tuple(
        rules.Restriction(
            entry_id,
            rules.RestrictionKind(kind),
            value,
            reason,
            datetime.fromisoformat(valid_from) if valid_from else None,
            datetime.fromisoformat(valid_until) if valid_until else None,
        )
        for entry_id, kind, value, reason, valid_from, valid_until in orjson.loads(restricted_text)
    )
    return Config(
        row=json_row(AccountRisk, orjson.loads(risk_row)) if risk_row else None,
        limits=limits,
        position_ids=set(orjson.loads(held_text)),
        yesterday=Decimal(yesterday) if yesterday is not None else None,
        restrictions=restrictions,
        compliance_rules=tuple(
            rules.Rule(rule_id, version, rules.RuleKind(kind), params)
            for rule_id, version, kind, params in orjson.loads(rules_text)
        ),
    )


def _decimal(value: str | None) -> Decimal:
    return Decimal(value) if value is not None else ZERO


def locked_read(
    *, tenant_id: UUID, account_id: UUID, order: OrderSpec, book: BookProvider, query: BookQuery, lock: bool = False
) -> Locked:
    """Read the book, the positions, the trading state, the kill switches and the open breakers
    in one statement (one round trip while the account lock is held).

    With `lock`, the account lock is taken by a first statement sent in the same round trip
    (client-side binding sends both as one query string): PostgreSQL runs them one after the
    other, each with its own snapshot under READ COMMITTED, so the read still sees every commit
    made before the lock was granted, and a placement makes one round trip fewer while waiting
    for and holding the lock."""
    state_sql, switches_sql, breakers_sql = _halts_sql()
    columns = [f"({_positions_sql()})::text", f"({state_sql})", f"({switches_sql})::text", f"({breakers_sql})::text"]
    strategy = str(order.strategy_id) if order.strategy_id is not None else None
    params: list[object] = [account_id, account_id, tenant_id, str(account_id), strategy, tenant_id, account_id]
    if isinstance(book, SqlBook):
        fragment, book_params = book.sql(query)
        columns.append(f"({fragment})::text")
        params += book_params
    sql = f"SELECT {', '.join(columns)}"
    if lock:
        sql, params = f"{ACCOUNT_LOCK_SQL}; {sql}", [account_lock_key(account_id), *params]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if lock:
            cursor.nextset()
        row = cursor.fetchone()
    positions = [
        PositionMark(
            iid,
            symbol,
            Decimal(qty),
            _decimal(cost),
            _decimal(realized),
            _decimal(today),
            date.fromisoformat(day) if day else None,
            Decimal(multiplier),
        )
        for iid, symbol, qty, cost, realized, today, day, multiplier in orjson.loads(row[0])
    ]
    return Locked(
        book=book.parse(row[4], query) if isinstance(book, SqlBook) else None,
        positions=positions,
        trading_state=row[1],
        switches=[tuple(item) for item in orjson.loads(row[2])],
        breakers=[tuple(item) for item in orjson.loads(row[3])],
    )


def _halts(*, account_id: UUID, locked: Locked) -> tuple[list[gates.Halt], list[str]]:
    halts: list[gates.Halt] = []
    reducing: list[str] = []
    for switch_id, scope, reason in locked.switches:
        halts.append(gates.Halt(f"kill switch ({scope})", switch_id, reason))
    for breaker_id, kind, action, reason in locked.breakers:
        if action == derisk.TradingState.HALTED:
            halts.append(gates.Halt(f"circuit breaker {kind}", breaker_id, reason))
        else:
            reducing.append(f"circuit breaker {kind} open: {reason}")
    trading_state = locked.trading_state
    if trading_state == derisk.TradingState.HALTED:
        halts.append(gates.Halt("trading state", str(account_id), "account set to HALTED by a risk manager"))
    elif trading_state == derisk.TradingState.REDUCING:
        reducing.append("account set to REDUCING by a risk manager")
    return halts, reducing


def derisk_state_of(
    *, row: AccountRisk | None, calendar: str, now: datetime, config: derisk.DeriskConfig | None = None
) -> derisk.DeriskStep | None:
    """The account's de-risk state now: the persisted state (apps.risk.services.playbook moves it)
    or the clock's, whichever is further that local day (None on an always-open calendar)."""
    if calendar == ALWAYS_OPEN:
        return None
    previous = derisk.DeriskState(row.derisk_state) if row is not None else derisk.DeriskState.NORMAL
    return derisk.derisk_next(
        previous=previous,
        previous_day=row.derisk_day if row is not None else None,
        now=now,
        config=config or defaults().derisk,
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
        config = config_read(tenant_id=tenant.id, account_id=account.id, order=order, now=now)
        row = config.row
        calendar = account_calendar(account, row)
        limits = _builtin_limits(config.limits, calendar=calendar, now=now)
        longest = max(
            (limit.period_seconds or 0 for limit in limits if limit.kind == gates.LimitKind.ORDER_RATE), default=0
        )
        asked = config.position_ids | {str(instrument.id)}
        last = last_marks(asked)
        yesterday = config.yesterday
        compliance = rules.Snapshot(
            now=now,
            calendar=calendars.facts_at_minute(calendar, now),
            restrictions=config.restrictions,
            rules=config.compliance_rules,
            working=(),
        )
        query = BookQuery(account.id, instrument.id, since=now - timedelta(seconds=longest), tenant_id=tenant.id)
        locked = locked_read(tenant_id=tenant.id, account_id=account.id, order=order, book=book, query=query, lock=lock)
        held = locked.book if locked.book is not None else book(query)
        positions = locked.positions
        missing = [str(p.instrument_id) for p in positions if str(p.instrument_id) not in asked]
        if missing:  # a position opened while this order waited for the lock
            last |= last_marks(missing)
        marks = marks_of(positions=positions, last=last, yesterday=yesterday, row=row, now=now)
        peak = max(row.peak_equity if row is not None else ZERO, marks.equity)
        if lock and row is not None and marks.equity > row.peak_equity:
            AccountRisk.objects.filter(account=account, peak_equity__lt=marks.equity).update(peak_equity=marks.equity)
        # Read under the lock: a halt set while this order waited for the lock stops it.
        halts, reducing = _halts(account_id=account.id, locked=locked)
        step = derisk_state_of(row=row, calendar=calendar, now=now, config=defaults().derisk_for(tenant.slug))
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
