"""In-flight risk: after a partial fill, is the rest of the order still within the limits?

A partial fill moves part of an order into the position; prices, equity and the limits themselves
may have moved since the order was accepted. `residual_breach` re-runs the limits whose figures
move with those (gates.RESIDUAL_KINDS) on the residual, the order replacing itself in the book as
a modification does, and returns the first failed check. The orders app calls it from the broker
event applier, inside the applier's transaction, only for orders left partly filled, and cancels
the rest when a check fails (`residual_breach_record` then announces and audits the breach).

Cheap when no limit is near: only the tenant's configured limits are re-run (the built-in gross
cap of spec 003 is the de-risk playbook's to enforce), so a tenant without a limit of those kinds
pays one indexed query per partial fill; with position limits only, just the order's instrument is
read; the whole account is valued only when an equity-based limit (gross exposure, concentration,
daily loss, drawdown) applies.

No account lock is taken (the applier already holds order row locks; a placement takes the lock
first and then rows, so taking it here could deadlock): the residual is judged on a snapshot read
in the applier's transaction, which is what a cancel decision needs.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.utils import timezone

from apps.audit.services import audit_record
from apps.brokers.models import BrokerAccount
from apps.common.context import Actor
from apps.common.redis import get_redis
from apps.events.prices import last_prices
from apps.events.services import outbox_emit
from apps.events.streams import RISK
from apps.portfolio.models import Position
from apps.risk import gates
from apps.risk.models import AccountRisk, RiskLimit
from apps.risk.services.controls import BREACHED
from apps.risk.services.pretrade import (
    BookProvider,
    BookQuery,
    OrderSpec,
    _limits,
    _yesterday_unrealized,
    marks_of,
    position_marks,
)

ZERO = Decimal(0)
# The residual kinds whose figures need the whole account valued (equity, every position's price).
EQUITY_KINDS = frozenset(gates.RESIDUAL_KINDS - {gates.LimitKind.MAX_POSITION_QTY})


def residual_limits_exist(*, tenant_id: UUID) -> bool:
    """Whether the tenant has an enabled limit of a kind a residual is checked against: callers
    skip everything else without one (the common case: one indexed query per partial fill)."""
    kinds = [kind.value for kind in gates.RESIDUAL_KINDS]
    return RiskLimit.objects.filter(tenant_id=tenant_id, kind__in=kinds, enabled=True).exists()


def residual_breach(
    *,
    account: BrokerAccount,
    order_id: UUID,
    residual: OrderSpec,
    book: BookProvider,
    now: datetime | None = None,
) -> gates.Check | None:
    """The first limit the residual of order `order_id` now breaches, or None.

    `residual.quantity` is what remains to fill; the book must already show the order with its new
    filled quantity (call it after the fill is saved).
    """
    now = now or timezone.now()
    tenant_id = account.tenant_id
    limits = _limits(tenant_id=tenant_id, account_id=account.id, order=residual, now=now)
    limits = [limit for limit in limits if limit.kind in gates.RESIDUAL_KINDS]
    if not limits:
        return None
    row = AccountRisk.objects.filter(account=account).first()
    positions = Position.objects.filter(account=account)
    if not any(limit.kind in EQUITY_KINDS for limit in limits):  # position limits only: one instrument
        positions = positions.filter(instrument_id=residual.instrument.id)
    held_positions = position_marks(positions)
    ids = [*(str(p.instrument_id) for p in held_positions), str(residual.instrument.id)]
    last = {key: price.last for key, price in last_prices(client=get_redis(), instrument_ids=ids).items()}
    needs_pnl = any(limit.kind == gates.LimitKind.DAILY_LOSS for limit in limits)
    yesterday = _yesterday_unrealized(account, now) if needs_pnl else None
    marks = marks_of(positions=held_positions, last=last, yesterday=yesterday, row=row, now=now)
    held = book(BookQuery(account.id, None, since=now, tenant_id=account.tenant_id))
    snapshot = gates.Snapshot(
        now=now,
        account_id=str(account.id),
        equity=marks.equity,
        peak_equity=max(row.peak_equity if row is not None else ZERO, marks.equity),
        day_pnl=marks.day_pnl,
        holdings=marks.holdings,
        open_orders=tuple(
            gates.OpenOrder(str(o.order_id), str(o.instrument_id), o.side, o.remaining)
            for o in held.open_orders
            if o.account_id == account.id
        ),
        recent_submissions=(),
        limits=tuple(limits),
        last_prices=marks.last,
    )
    spec = gates.OrderSpec(
        account_id=str(account.id),
        instrument_id=str(residual.instrument.id),
        symbol=residual.instrument.symbol,
        side=residual.side,
        quantity=residual.quantity,
        order_type=residual.order_type,
        limit_price=residual.limit_price,
        stop_price=residual.stop_price,
        strategy_id=str(residual.strategy_id) if residual.strategy_id else None,
        multiplier=residual.instrument.multiplier,
        replaces=str(order_id),
    )
    failed = gates.residual_breaches(snapshot, spec)
    return failed[0] if failed else None


def residual_breach_record(
    *, tenant_id: UUID, account_id: UUID, order_id: UUID, residual: Decimal, check: gates.Check, actor: Actor
) -> dict[str, Any]:
    """Announce (`risk.breached` on `ev.risk`) and audit the cancel of a residual; call inside the
    transaction that cancels it. Returns the payload."""
    payload: dict[str, Any] = {
        "control": "RESIDUAL_CANCEL",
        "action": "CANCEL",
        "account_id": str(account_id),
        "order_id": str(order_id),
        "residual_quantity": gates.text(residual),
        **check.as_dict(),
    }
    outbox_emit(
        tenant_id=tenant_id, stream=RISK, kind=BREACHED, payload=payload, aggregate_type="order", aggregate_id=order_id
    )
    audit_record(
        tenant_id=tenant_id,
        actor=actor,
        action="risk.residual_cancel",
        resource_type="order",
        resource_id=order_id,
        after=payload,
    )
    return payload
