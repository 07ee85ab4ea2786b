"""Placing orders: one order (or one order per leg) with its event, outbox row and audit row in one
transaction, the idempotency record with it, and routing after commit."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.brokers.models import BrokerAccount, Instrument
from apps.brokers.permissions import accounts_for
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
from apps.orders import pretrade, validation
from apps.orders.models import Order, OrderClass, OrderType
from apps.orders.serializers import order_to_dict
from apps.orders.services import routing
from apps.orders.services.idempotency import Replay, idempotency_claim, idempotency_store
from apps.orders.services.lifecycle import audit_order, publish, record_event
from apps.orders.services.risk import order_risk
from apps.tenants.models import Tenant, User
from apps.tenants.scopes import Role

OPPOSITE = {"BUY": "SELL", "SELL": "BUY"}


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


def _account(member: Member, account_id: UUID) -> BrokerAccount:
    accounts = BrokerAccount.objects.filter(tenant=member.tenant)
    if member.user is not None and member.role is not None:
        accounts = accounts_for(tenant=member.tenant, user=member.user, role=member.role)
    try:
        return accounts.get(id=account_id)
    except BrokerAccount.DoesNotExist as exc:
        raise NotFound(f"Broker account {account_id} not found") from exc


def resolve_instrument(*, symbol: str, currency: str | None) -> Instrument:
    """The instrument a symbol names; a symbol listed in several currencies needs `currency`."""
    candidates = list(Instrument.objects.filter(symbol__iexact=symbol))
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
    )


def order_preview(*, member: Member, request: PlaceRequest) -> dict[str, Any]:
    """Evaluate every gate for an order without placing it."""
    account = _account(member, request.account_id)
    instrument = resolve_instrument(symbol=request.symbol, currency=request.currency)
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
    fields = request.fields
    order = Order(
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
    # A generated client_order_id (a new UUID, or a leg's suffix on one) cannot collide, so it
    # skips the savepoint (two round trips while the account lock is held).
    guard = transaction.atomic() if request.client_order_id else contextlib.nullcontext()
    try:
        with guard:
            order.save(force_insert=True)
    except IntegrityError as exc:
        raise StateConflict(
            f"client_order_id {client_order_id!r} is already used in this tenant",
            details={"client_order_id": client_order_id},
            hint="Use a new client_order_id, or GET /orders?client_order_id=… to find the first order",
        ) from exc
    record_event(order, kind="CREATED", from_state="", actor=member.actor, detail={"order_class": fields.order_class})
    publish(order, kind="order.created")
    return order


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
    legs = []
    for suffix, side, order_type, limit_price, stop_price in specs:
        leg = _new_order(
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
        legs.append(leg)
    if oca and parent.oca_group != oca and klass == OrderClass.OCO:
        parent.oca_group = oca
        parent.save(update_fields=["oca_group"])
    return legs


def _place(*, member: Member, request: PlaceRequest) -> tuple[Order, list[Order]]:
    """Validate and write one order request (inside the caller's transaction); route on commit."""
    account = _account(member, request.account_id)
    instrument = resolve_instrument(symbol=request.symbol, currency=request.currency)
    now = timezone.now()
    fields = request.fields
    problems = validation.order_problems(fields, validation.Rules(instrument.tick_size, instrument.lot_size), now=now)
    if problems:
        raise ValidationFailed("The order is invalid", fields=problems)
    pretrade.enforce(_candidate(account, instrument, fields))
    # Serialises placements on the account until commit; raises the refusal (423 / 422 / 429).
    order_risk(
        tenant=member.tenant,
        account=account,
        instrument=instrument,
        fields=fields,
        strategy_id=request.strategy_id,
        outside_rth=request.outside_rth,
        lock=True,
    )
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
    transaction.on_commit(partial(routing.send, account_id=account.id, kind="oms.submit", payload=payload))
    for order in (parent, *legs):
        audit_order(order=order, actor=member.actor, action="order.place")
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
        parent, legs = _place(member=member, request=request)
        body = order_to_dict(parent, legs=legs if legs else None)
        if record is not None:
            idempotency_store(record=record, status=201, body=body)
    return Outcome(201, body)


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
