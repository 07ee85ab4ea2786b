"""Placing orders: one order (or one order per leg) with its event, outbox row and audit row in one
transaction, the idempotency record with it, and routing after commit."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any
from uuid import UUID

import orjson
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db import DEFAULT_DB_ALIAS, IntegrityError, OperationalError, connection, connections, models, transaction
from django.db.models import Model
from django.db.models.expressions import DatabaseDefault
from django.utils import timezone
from guardian.utils import get_group_obj_perms_model, get_user_obj_perms_model
from psycopg.adapt import Transformer

from apps.audit.services import audit_record
from apps.brokers.models import BREAKER_HALT, BrokerAccount, Instrument
from apps.brokers.permissions import ALL_ACCOUNT_ROLES, TRADE_PERMISSION
from apps.common.context import Actor
from apps.common.errors import (
    ComplianceBlocked,
    DomainError,
    KillSwitchActive,
    NotFound,
    RateLimited,
    RiskLimitBreach,
    StateConflict,
    ValidationFailed,
)
from apps.events.services import relay_wake
from apps.orders import pretrade, validation
from apps.orders.models import Order, OrderClass, OrderType
from apps.orders.serializers import order_to_dict
from apps.orders.services import routing
from apps.orders.services.idempotency import Replay, idempotency_claim, idempotency_store, idempotency_store_sql
from apps.orders.services.lifecycle import audit_order_entry, created_event, order_outbox_event
from apps.orders.services.risk import order_risk
from apps.risk.services.pretrade import account_lock, json_columns, json_row
from apps.tenants.models import Tenant, User
from apps.tenants.scopes import Role

OPPOSITE = {"BUY": "SELL", "SELL": "BUY"}
DEADLOCK_DETECTED = "40P01"


@dataclass(frozen=True, slots=True)
class PlaceRequest:
    """A parsed `POST /orders` body."""

    account_id: UUID
    symbol: str
    fields: validation.OrderFields
    outside_rth: bool = False
    currency: str | None = None
    client_order_id: str | None = None
    strategy_id: UUID | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Member:
    """Who places: the tenant, the acting principal and the member whose account grants apply."""

    tenant: Tenant
    actor: Actor
    user: User | None
    role: Role | str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The HTTP-level outcome: status and body, and whether it is a replay."""

    status: int
    body: Any
    replayed: bool = False


def _grant_filter(member: Member) -> tuple[str, list[object]]:
    """`accounts_for` as a WHERE clause on `a` (guardian's grants, user's and groups', superusers
    see every account), so that the account, the grant and the listings are one statement."""
    if member.user is None or member.role is None or Role(member.role) in ALL_ACCOUNT_ROLES:
        return "", []
    user_perms = get_user_obj_perms_model(BrokerAccount)._meta.db_table
    group_perms = get_group_obj_perms_model(BrokerAccount)._meta.db_table
    user_groups = User.groups.through._meta.db_table
    content_type = ContentType.objects.get_for_model(BrokerAccount).id
    codename = TRADE_PERMISSION.split(".", 1)[1]
    permission = Permission._meta.db_table
    sql = (
        f" AND (EXISTS (SELECT 1 FROM {User._meta.db_table} u WHERE u.id = %s AND u.is_superuser)"  # noqa: S608
        f" OR EXISTS (SELECT 1 FROM {user_perms} p JOIN {permission} ap ON ap.id = p.permission_id"
        " WHERE p.user_id = %s AND p.content_type_id = %s AND ap.content_type_id = %s AND ap.codename = %s"
        " AND p.object_pk = a.id::text)"
        f" OR EXISTS (SELECT 1 FROM {group_perms} g JOIN {permission} ap ON ap.id = g.permission_id"
        f" JOIN {user_groups} ug ON ug.group_id = g.group_id"
        " WHERE ug.user_id = %s AND g.content_type_id = %s AND ap.content_type_id = %s AND ap.codename = %s"
        " AND g.object_pk = a.id::text))"
    )
    user = member.user.pk
    return sql, [user, user, content_type, content_type, codename, user, content_type, content_type, codename]


_ACCOUNT_FIELDS = BrokerAccount._meta.concrete_fields


def _listing_sql() -> str:
    return (
        f"SELECT coalesce(json_agg({json_columns(Instrument, 'i')}), '[]')"  # noqa: S608
        f" FROM {Instrument._meta.db_table} i WHERE upper(i.symbol) = upper(%s)"
    )


def _account_and_listings(member: Member, account_id: UUID, *, symbol: str) -> tuple[BrokerAccount, list[Instrument]]:
    """The member's account (404 when it is not theirs to trade) and the instruments listed under
    `symbol`: one statement, rows built as the ORM loads them (no queryset to compile)."""
    grant, grant_params = _grant_filter(member)
    columns = ", ".join(f"a.{model_field.column}" for model_field in _ACCOUNT_FIELDS)
    sql = (
        f"SELECT {columns}, ({_listing_sql()})::text FROM {BrokerAccount._meta.db_table} a"  # noqa: S608
        f" WHERE a.id = %s AND a.tenant_id = %s{grant}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [symbol, account_id, member.tenant.pk, *grant_params])
        row = cursor.fetchone()
    if row is None:
        raise NotFound(f"Broker account {account_id} not found")
    *values, listings = row
    account = BrokerAccount.from_db(connection.alias, [f.attname for f in _ACCOUNT_FIELDS], values)
    account.tenant = member.tenant
    return account, [json_row(Instrument, listing) for listing in orjson.loads(listings)]


def resolve_instrument(*, symbol: str, currency: str | None) -> Instrument:
    """The instrument a symbol names; a symbol listed in several currencies needs `currency`."""
    return _pick_listing(list(Instrument.objects.filter(symbol__iexact=symbol)), symbol=symbol, currency=currency)


def _pick_listing(candidates: list[Instrument], *, symbol: str, currency: str | None) -> Instrument:
    if currency:
        candidates = [instrument for instrument in candidates if instrument.currency == currency.upper()]
    if not candidates:
        raise ValidationFailed(f"Unknown symbol {symbol!r}", fields={"symbol": [f"unknown symbol {symbol!r}"]})
    if len(candidates) > 1:
        listings = ", ".join(sorted(f"{i.exchange}/{i.currency}" for i in candidates))
        raise ValidationFailed(
            f"Symbol {symbol!r} is listed more than once ({listings})",
            fields={"currency": [f"required: {symbol} trades as {listings}"]},
        )
    return candidates[0]


def _account_instrument(member: Member, request: PlaceRequest) -> tuple[BrokerAccount, Instrument]:
    account, listings = _account_and_listings(member, request.account_id, symbol=request.symbol)
    return account, _pick_listing(listings, symbol=request.symbol, currency=request.currency)


def _candidate(account: BrokerAccount, instrument: Instrument, fields: validation.OrderFields) -> pretrade.Candidate:
    return pretrade.Candidate(
        account_code=account.account_code,
        account_status=account.status,
        account_status_reason=account.status_reason,
        instrument_active=instrument.active,
        symbol=instrument.symbol,
        side=fields.side,
        quantity=fields.quantity,
        price=fields.limit_price or fields.stop_price,
        when_disconnected=account.orders_when_disconnected,
        # HALTED by the gateway's circuit breaker holds or refuses like a disconnection.
        gateway_halt=not account.halted and account.status_reason.startswith(BREAKER_HALT),
    )


def order_preview(*, member: Member, request: PlaceRequest) -> dict[str, Any]:
    """Evaluate every gate for an order without placing it."""
    account, instrument = _account_instrument(member, request)
    problems = validation.order_problems(
        request.fields, validation.Rules(instrument.tick_size, instrument.lot_size), now=timezone.now()
    )
    checks = [
        pretrade.Check("validation", not problems, "valid" if not problems else f"invalid fields: {problems}"),
        *pretrade.evaluate(_candidate(account, instrument, request.fields)),
    ]
    risk = order_risk(
        tenant=member.tenant,
        account=account,
        instrument=instrument,
        fields=request.fields,
        strategy_id=request.strategy_id,
        outside_rth=request.outside_rth,
        lock=False,
    )
    return {
        "accepted": all(check.passed for check in checks) and risk.accepted,
        "checks": [{"gate": c.gate, "passed": c.passed, "detail": c.detail} for c in checks] + risk.checks,
        "projected": risk.projected,
    }


def _new_order(
    *,
    member: Member,
    account: BrokerAccount,
    instrument: Instrument,
    request: PlaceRequest,
    client_order_id: str,
    side: str,
    order_type: str,
    limit_price: Decimal | None,
    stop_price: Decimal | None,
    now: datetime,
    parent: Order | None = None,
    oca_group: str = "",
    trail: tuple[Decimal | None, Decimal | None] = (None, None),
) -> Order:
    """An unsaved order (`_write` inserts it with its legs)."""
    fields = request.fields
    return Order(
        tenant=member.tenant,
        account=account,
        instrument=instrument,
        symbol=instrument.symbol,
        client_order_id=client_order_id,
        side=side,
        quantity=fields.quantity,
        order_type=order_type,
        limit_price=limit_price,
        stop_price=stop_price,
        trail_amount=trail[0],
        trail_percent=trail[1],
        time_in_force=fields.time_in_force,
        good_till=fields.good_till,
        outside_rth=request.outside_rth,
        strategy_id=request.strategy_id,
        metadata=request.metadata,
        order_class=fields.order_class,
        parent=parent,
        oca_group=oca_group,
        created_by=member.user,
        created_at=now,
        updated_at=now,
    )


def _legs(
    *,
    member: Member,
    account: BrokerAccount,
    instrument: Instrument,
    request: PlaceRequest,
    parent: Order,
    now: datetime,
) -> list[Order]:
    fields = request.fields
    klass = fields.order_class
    exit_side = OPPOSITE[fields.side]
    oca = f"oca-{parent.id.hex[:16]}" if klass in (OrderClass.BRACKET, OrderClass.OCO) else ""
    # OCO: both orders stand on the same side; the other leg is a stop.
    specs: list[tuple[str, str, str, Decimal | None, Decimal | None]] = []
    if fields.take_profit is not None:
        specs.append(("tp", exit_side, OrderType.LMT, fields.take_profit.limit_price, None))
    if fields.stop_loss is not None:
        stop = fields.stop_loss
        side = fields.side if klass == OrderClass.OCO else exit_side
        order_type = OrderType.STP_LMT if stop.limit_price is not None else OrderType.STP
        specs.append(("sl", side, order_type, stop.limit_price, stop.stop_price))
    legs = [
        _new_order(
            member=member,
            account=account,
            instrument=instrument,
            request=request,
            client_order_id=f"{parent.client_order_id}.{suffix}"[:64],
            side=side,
            order_type=order_type,
            limit_price=limit_price,
            stop_price=stop_price,
            now=now,
            parent=parent,
            oca_group=oca,
        )
        for suffix, side, order_type, limit_price, stop_price in specs
    ]
    if oca and klass == OrderClass.OCO:
        parent.oca_group = oca
    return legs


_AS_IS = frozenset({str, int, bool, UUID})
_PLAIN_FIELDS = frozenset(
    {
        models.CharField,
        models.TextField,
        models.UUIDField,
        models.ForeignKey,
        models.DateTimeField,
        models.BooleanField,
        models.IntegerField,
        models.BigIntegerField,
        models.PositiveIntegerField,
    }
)


def _insert_sql(rows: Sequence[Model]) -> tuple[str, list[object]]:
    """One multi-row INSERT of `rows` (instances of one model), prepared as `bulk_create` does
    (`pre_save`, `get_db_prep_save`, DEFAULT for a database default) without its compiler."""
    db = connections[DEFAULT_DB_ALIAS]  # the wrapper itself: no thread-local lookup per value
    meta = rows[0]._meta
    quote = db.ops.quote_name
    fields = meta.concrete_fields
    params: list[object] = []
    tuples = []
    for row in rows:
        marks = []
        for model_field in fields:
            value = model_field.pre_save(row, add=True)
            if isinstance(value, DatabaseDefault):
                marks.append("DEFAULT")
                continue
            marks.append("%s")
            # Plain fields holding values the driver takes as they are skip the field's preparation
            # (the costly part of it is the naive-datetime check); anything else goes through it
            # (JSON, where None is JSON null; IP addresses, where "" is NULL; decimals...).
            if type(model_field) in _PLAIN_FIELDS and (
                value is None or type(value) in _AS_IS or (type(value) is datetime and value.tzinfo is not None)
            ):
                params.append(value)
            else:
                params.append(model_field.get_db_prep_save(value, db))
        tuples.append(f"({', '.join(marks)})")
        row._state.adding, row._state.db = False, db.alias
    columns = ", ".join(quote(model_field.column) for model_field in fields)
    return f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {', '.join(tuples)}", params  # noqa: S608


def _bound(statement: str, params: list[object]) -> str:
    """`statement` with its `%s` placeholders replaced by the literals of `params`, as psycopg's
    client-side binding quotes them (its Transformer). psycopg would parse a statement this long
    with a regular expression on every call (it caches only statements under 4 kB and 50
    parameters): about 1 ms of CPU per placement. The statement is ours: table and column names
    and placeholders, no other `%`."""
    raw = connections[DEFAULT_DB_ALIAS].connection
    transformer = Transformer(raw)
    encoding = raw.info.encoding
    literals = tuple("NULL" if value is None else transformer.as_literal(value).decode(encoding) for value in params)
    return statement % literals


def _write(
    *, member: Member, request: PlaceRequest, orders: list[Order], stored: tuple[str, list[object]] | None = None
) -> None:
    """Insert the orders (parent first), their CREATED events, outbox rows and audit rows, and
    `stored` (the idempotency record's response): one statement, whatever the number of legs."""
    detail = {"order_class": request.fields.order_class}
    groups: list[Sequence[Model]] = [
        orders,
        [created_event(order, actor=member.actor, detail=detail) for order in orders],
        [order_outbox_event(order, kind="order.created") for order in orders],
        [audit_order_entry(order=order, actor=member.actor, action="order.place") for order in orders],
    ]
    parts, params = [], []
    for rows in groups:
        sql, row_params = _insert_sql(rows)
        parts.append(sql)
        params += row_params
    if stored is not None:
        parts.append(stored[0])
        params += stored[1]
    statement = "WITH " + ", ".join(f"w{n} AS ({sql})" for n, sql in enumerate(parts)) + " SELECT 1"
    # A generated client_order_id (a new UUID, or a leg's suffix on one) cannot collide, so it
    # skips the savepoint.
    guard = transaction.atomic() if request.client_order_id else contextlib.nullcontext()
    try:
        with guard, connection.cursor() as cursor:
            cursor.execute(_bound(statement, params))
    except IntegrityError as exc:
        client_order_id = orders[0].client_order_id
        raise StateConflict(
            f"client_order_id {client_order_id!r} is already used in this tenant",
            details={"client_order_id": client_order_id},
            hint="Use a new client_order_id, or GET /orders?client_order_id=… to find the first order",
        ) from exc
    except OperationalError as exc:
        if not _deadlock(exc):
            raise
        raise _contended(orders[0]) from exc
    relay_wake()


def _deadlock(exc: OperationalError) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) == DEADLOCK_DETECTED


def _contended(order: Order) -> StateConflict:
    """A batch holding the account's lock inserts the same client_order_id as this placement, which
    waits for that lock: PostgreSQL breaks the wait cycle by refusing one of the two; the other
    one places the order."""
    return StateConflict(
        f"client_order_id {order.client_order_id!r} is being placed by another request",
        details={"client_order_id": order.client_order_id},
        hint="GET /orders?client_order_id=… to find the order",
    )


def _place(
    *,
    member: Member,
    request: PlaceRequest,
    respond: Callable[[Order, list[Order]], tuple[str, list[object]] | None] | None = None,
) -> tuple[Order, list[Order]]:
    """Validate and write one order request (inside the caller's transaction); route on commit.

    The rows are written before the account lock is taken, and the risk book leaves them out: the
    lock (taken in `order_risk`) is held only for the snapshot the gates read, the decision and
    the commit, so that placements on one account wait for each other as briefly as possible.
    """
    account, instrument = _account_instrument(member, request)
    now = timezone.now()
    fields = request.fields
    problems = validation.order_problems(fields, validation.Rules(instrument.tick_size, instrument.lot_size), now=now)
    if problems:
        raise ValidationFailed("The order is invalid", fields=problems)
    pretrade.enforce(_candidate(account, instrument, fields))
    parent = _new_order(
        member=member,
        account=account,
        instrument=instrument,
        request=request,
        client_order_id=request.client_order_id or f"oms-{uuid.uuid4().hex}",
        side=fields.side,
        order_type=fields.order_type,
        limit_price=fields.limit_price,
        stop_price=fields.stop_price,
        trail=(fields.trail_amount, fields.trail_percent),
        now=now,
    )
    legs = _legs(member=member, account=account, instrument=instrument, request=request, parent=parent, now=now)
    payload = routing.command_payload([parent, *legs], con_id=instrument.con_id)
    # Routed on commit, first of the on-commit work (a refusal rolls the callback back with the rows).
    transaction.on_commit(partial(routing.send, account_id=account.id, kind="oms.submit", payload=payload))
    # The response is known before the rows are written: its idempotency record is stored with
    # them (one statement), not while holding the account lock.
    stored = respond(parent, legs) if respond is not None else None
    _write(member=member, request=request, orders=[parent, *legs], stored=stored)
    # Serialises placements on the account until commit; raises the refusal (423 / 422 / 429),
    # which rolls back the rows above.
    try:
        order_risk(
            tenant=member.tenant,
            account=account,
            instrument=instrument,
            fields=fields,
            strategy_id=request.strategy_id,
            outside_rth=request.outside_rth,
            lock=True,
            placing=(parent.id, *(leg.id for leg in legs)),
        )
    except OperationalError as exc:
        if not _deadlock(exc):
            raise
        raise _contended(parent) from exc
    return parent, legs


# Refusals of the pre-trade gates (not input errors): each one is audited, on purpose outside the
# placing transaction that rolled back.
DENIALS = (RiskLimitBreach, ComplianceBlocked, KillSwitchActive, RateLimited)


def _denial_entry(*, member: Member, request: PlaceRequest, denial: DomainError) -> None:
    audit_record(
        tenant_id=member.tenant.id,
        actor=member.actor,
        action="order.denied",
        resource_type="order",
        resource_id=request.client_order_id or "",
        after={
            "code": denial.code,
            "message": denial.message,
            "details": denial.details,
            "account_id": request.account_id,
            "symbol": request.symbol,
            "side": request.fields.side,
            "quantity": request.fields.quantity,
            "order_type": request.fields.order_type,
        },
    )


def order_place(*, member: Member, request: PlaceRequest, idempotency_key: str | None, fingerprint: str) -> Outcome:
    """Place one order (with its legs); replay the first outcome for a reused Idempotency-Key."""
    try:
        return _order_place(member=member, request=request, idempotency_key=idempotency_key, fingerprint=fingerprint)
    except DENIALS as denial:
        with transaction.atomic(durable=True):
            _denial_entry(member=member, request=request, denial=denial)
        raise


def _order_place(*, member: Member, request: PlaceRequest, idempotency_key: str | None, fingerprint: str) -> Outcome:
    with transaction.atomic(durable=True):
        record = None
        if idempotency_key:
            claimed = idempotency_claim(tenant=member.tenant, key=idempotency_key, fingerprint=fingerprint)
            if isinstance(claimed, Replay):
                return Outcome(claimed.status, claimed.body, replayed=True)
            record = claimed
        bodies: list[dict[str, Any]] = []

        def keep(parent: Order, legs: list[Order]) -> tuple[str, list[object]] | None:
            bodies.append(order_to_dict(parent, legs=legs if legs else None))
            if record is None:
                return None
            return idempotency_store_sql(record=record, status=201, body=bodies[0])

        _place(member=member, request=request, respond=keep)
    return Outcome(201, bodies[0])


def order_place_batch(
    *, member: Member, requests: list[PlaceRequest | DomainError], idempotency_key: str | None, fingerprint: str
) -> Outcome:
    """Place up to 100 orders; each is accepted or refused on its own (a savepoint each)."""
    with transaction.atomic(durable=True):
        record = None
        if idempotency_key:
            claimed = idempotency_claim(tenant=member.tenant, key=idempotency_key, fingerprint=fingerprint)
            if isinstance(claimed, Replay):
                return Outcome(claimed.status, claimed.body, replayed=True)
            record = claimed
        # Every account of the batch is locked first, in one order (sorted ids): two batches over
        # the same accounts cannot each hold one lock and wait for the other's.
        for account_id in sorted({request.account_id for request in requests if isinstance(request, PlaceRequest)}):
            account_lock(account_id=account_id)
        results: list[dict[str, Any]] = []
        for index, request in enumerate(requests):
            try:
                if isinstance(request, DomainError):
                    raise request
                with transaction.atomic():
                    parent, legs = _place(member=member, request=request)
                body = order_to_dict(parent, legs=legs if legs else None)
                results.append({"index": index, "status": 201, "order": body, "error": None})
            except DomainError as error:
                if isinstance(error, DENIALS) and not isinstance(request, DomainError):
                    # The item's savepoint rolled back; the batch's transaction keeps its audit row.
                    _denial_entry(member=member, request=request, denial=error)
                results.append({"index": index, "status": error.status, "order": None, "error": error_body(error)})
        response = {"results": results}
        if record is not None:
            idempotency_store(record=record, status=200, body=response)
    return Outcome(200, response)


def error_body(error: DomainError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message, "details": error.details, "hint": error.hint}
