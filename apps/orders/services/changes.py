"""Changing working orders: modify (PATCH with If-Match), cancel, and batch cancel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.brokers.models import BREAKER_HALT
from apps.common.errors import DomainError, StateConflict, ValidationFailed
from apps.orders import validation
from apps.orders.models import Order
from apps.orders.pretrade import broker_down
from apps.orders.serializers import dec, order_to_dict
from apps.orders.services import routing
from apps.orders.services.lifecycle import audit_order, order_get_for_update, order_move, order_touch
from apps.orders.services.placement import DENIALS, Member, error_body
from apps.orders.services.risk import order_modify_risk
from apps.orders.state import OPEN, OrderState, cancel_target, modify_target, reduce_quantity_check
from apps.risk.sessions import session_open

MODIFIABLE = ("quantity", "limit_price", "stop_price", "trail_amount", "trail_percent")


@dataclass(frozen=True, slots=True)
class Modification:
    """The fields a PATCH sets (only those present in the request body)."""

    values: dict[str, Decimal | None]


def _check_modification(order: Order, values: dict[str, Decimal | None]) -> None:
    merged = {name: getattr(order, name) for name in MODIFIABLE} | values
    instrument = order.instrument
    rules = validation.Rules(instrument.tick_size, instrument.lot_size)
    fields = validation.OrderFields(
        side=order.side,
        quantity=merged["quantity"] or Decimal(0),
        order_type=order.order_type,
        time_in_force=order.time_in_force,
        limit_price=merged["limit_price"],
        stop_price=merged["stop_price"],
        trail_amount=merged["trail_amount"],
        trail_percent=merged["trail_percent"],
    )
    problems = validation.price_problems(fields, rules)
    if "quantity" in values:
        if values["quantity"] is None:
            problems.setdefault("quantity", []).append("cannot be null")
        else:
            validation.check_quantity(problems, values["quantity"], rules)
    if problems:
        raise ValidationFailed("The modification is invalid", fields=problems)
    if values.get("quantity") is not None:
        reduce_quantity_check(new_quantity=values["quantity"], filled=order.filled_quantity)


def order_held(order: Order, *, now: datetime | None = None) -> bool:
    """Whether a NEW order's submission is held by us, so that the broker does not know it: a
    modification or a cancel is then done here only, and the submission sent later (by
    `held_release` at the open, or the resend of NEW orders) carries the stored values.

    Held: outside its account's session without `outside_rth` (of the parent: legs go with it),
    as `routing.send` holds it; or on an account whose broker is down and that holds orders, once
    the submission published meanwhile is older than the connectors accept (a younger one may
    still reach the broker, so the command follows it as for any NEW order).
    """
    if order.state != OrderState.NEW or order.broker_order_id:
        return False
    now = now or timezone.now()
    root = order.parent if order.parent_id is not None else order
    if root is not None and not root.outside_rth and not session_open(order.account_id, now)[0]:
        return True
    account = order.account
    gateway_halt = not account.halted and account.status_reason.startswith(BREAKER_HALT)
    return (
        account.orders_when_disconnected == "HOLD"
        and broker_down(account.status, gateway_halt=gateway_halt)
        and order.created_at < now - timedelta(seconds=settings.COMMAND_MAX_AGE_SECONDS)
    )


def order_modify(*, member: Member, order_id: UUID, expected_version: int, modification: Modification) -> Order:
    """Change quantity or prices of an open order whose version the client has seen."""
    try:
        return _order_modify(
            member=member, order_id=order_id, expected_version=expected_version, modification=modification
        )
    except DENIALS as denial:
        # Audited in a transaction of its own: the modifying one rolled back.
        with transaction.atomic(durable=True):
            audit_record(
                tenant_id=member.tenant.id,
                actor=member.actor,
                action="order.modify_denied",
                resource_type="order",
                resource_id=order_id,
                after={
                    "code": denial.code,
                    "message": denial.message,
                    "details": denial.details,
                    "requested": {name: dec(value) for name, value in modification.values.items()},
                },
            )
        raise


@transaction.atomic(durable=True)
def _order_modify(*, member: Member, order_id: UUID, expected_version: int, modification: Modification) -> Order:
    order = order_get_for_update(tenant=member.tenant, order_id=order_id, user=member.user, role=member.role)
    if order.version != expected_version:
        raise StateConflict(
            f"Order {order.id} changed since version {expected_version} (now {order.version})",
            details={"version": order.version, "if_match": expected_version},
            hint="GET the order again and retry with its current ETag",
        )
    values = {name: value for name, value in modification.values.items() if getattr(order, name) != value}
    if not values:
        raise ValidationFailed(
            "Nothing to modify", fields={"body": [f"give at least one changed field of {', '.join(MODIFIABLE)}"]}
        )
    target = modify_target(OrderState(order.state))
    held = order_held(order)
    _check_modification(order, values)
    order_modify_risk(order=order, values=values)  # limits apply to modifications too
    before = {name: dec(getattr(order, name)) for name in values}
    for name, value in values.items():
        setattr(order, name, value)
    detail: dict[str, Any] = {"before": before, "after": {name: dec(value) for name, value in values.items()}}
    if held:
        detail["held"] = True  # modified here only: the broker has not seen the order
    if target == OrderState.PENDING_MODIFY:
        order = order_move(
            order=order, to=target, actor=member.actor, reason="modify requested", fields=values, detail=detail
        )
    else:
        order = order_touch(order, fields=values, actor=member.actor, kind="MODIFIED", detail=detail)
    # Even a NEW order gets the command (its submission may already be on the way), unless we
    # hold its submission: that one goes out later with the new values.
    if not held:
        payload = routing.command_payload([order], con_id=order.instrument.con_id)
        transaction.on_commit(partial(routing.send, account_id=order.account_id, kind="oms.modify", payload=payload))
    audit_order(order=order, actor=member.actor, action="order.modify", before=before)
    return order


def _cancel_locked(order: Order, *, member: Member) -> bool:
    """Cancel one locked order; return whether anything changed."""
    target = cancel_target(OrderState(order.state))
    if target is None:
        return False
    held = order_held(order)
    reason = "cancel requested (held: never sent to the broker)" if held else "cancel requested"
    order_move(order=order, to=target, actor=member.actor, reason=reason)
    if held:  # CANCELED here; the broker never saw it
        return True
    payload = routing.command_payload([order], con_id=order.instrument.con_id)
    transaction.on_commit(partial(routing.send, account_id=order.account_id, kind="oms.cancel", payload=payload))
    return True


def _cancel_with_legs(order: Order, *, member: Member) -> Order:
    changed = [order] if _cancel_locked(order, member=member) else []
    # Cancelling the parent of a bracket / OTO cancels its open legs too, as IB does.
    legs = Order.objects.select_for_update().filter(parent=order, state__in=[s.value for s in OPEN]).order_by("id")
    changed += [leg for leg in legs if _cancel_locked(leg, member=member)]
    for cancelled in changed:  # audit rows last
        audit_order(order=cancelled, actor=member.actor, action="order.cancel")
    return order


@transaction.atomic(durable=True)
def order_cancel(*, member: Member, order_id: UUID) -> Order:
    """Ask the broker to cancel a working order; cancel at once if it was never routed."""
    order = order_get_for_update(tenant=member.tenant, order_id=order_id, user=member.user, role=member.role)
    return _cancel_with_legs(order, member=member)


@transaction.atomic(durable=True)
def order_cancel_batch(*, member: Member, order_ids: list[UUID]) -> list[dict[str, Any]]:
    """Cancel up to 100 orders, each on its own: a refusal of one does not stop the others."""
    results: list[dict[str, Any]] = []
    # Lock in id order so two concurrent batch cancels cannot deadlock.
    for index, order_id in sorted(enumerate(order_ids), key=lambda pair: str(pair[1])):
        try:
            with transaction.atomic():
                order = order_get_for_update(
                    tenant=member.tenant, order_id=order_id, user=member.user, role=member.role
                )
                order = _cancel_with_legs(order, member=member)
            results.append({"index": index, "status": 202, "order": order_to_dict(order), "error": None})
        except DomainError as error:
            results.append({"index": index, "status": error.status, "order": None, "error": error_body(error)})
    return sorted(results, key=lambda result: result["index"])
