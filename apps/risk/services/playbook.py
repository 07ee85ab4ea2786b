"""Spec 003's de-risk playbook, run by a periodic task: move each account's persisted de-risk
state by the exchange clock, and in HARD_DERISK ask for reductions.

For every account on an exchange calendar (always-open accounts have no schedule), with the
tenant's playbook (config/risk_rules.yaml, `tenants.<slug>.derisk` overrides):
- the state (`AccountRisk.derisk_state` / `derisk_day`) moves NORMAL → SOFT_DERISK at `soft_at`
  and → HARD_DERISK at `hard_at` of the exchange's local day, never backwards within that day;
  every transition is audited (`risk.derisk.transition`) and announced on `ev.risk`
  (`risk.derisk.changed`). The pre-trade gate reads the same persisted state (SOFT_DERISK and
  HARD_DERISK let only exposure-reducing orders through).
- in HARD_DERISK on a day the exchange had a session, when gross exposure is above the target,
  `reduction_plan` scales every position down so that gross ends at or below the target; each
  reduction becomes a `ReductionIntent` row (one per account, day and instrument: running the
  task again adds nothing), audited (`risk.intent.create`) and announced on `ev.intents`
  (`risk.reduction_intent`). The orders app turns intents into orders
  (`apps.orders.services.intents`).
Every function takes `now`, so tests drive the clock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import structlog
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.brokers.models import BrokerAccount, Instrument
from apps.common.context import Actor
from apps.compliance.calendars import ALWAYS_OPEN, session
from apps.events.services import outbox_emit
from apps.events.streams import RISK
from apps.portfolio.models import Position
from apps.risk import derisk
from apps.risk.config import defaults
from apps.risk.exposure import pct
from apps.risk.models import AccountRisk, ReductionIntent
from apps.risk.services.limits import account_risk_for
from apps.risk.services.pretrade import account_marks
from apps.risk.sessions import calendar_for

log = structlog.get_logger(__name__)
INTENTS = "ev.intents"
DERISK_CHANGED = "risk.derisk.changed"
REDUCTION_INTENT = "risk.reduction_intent"
PLAYBOOK = Actor.system("derisk-playbook")
# Reductions are marketable limit orders this far through the last price (they may go out of hours).
LIMIT_THROUGH = Decimal("0.005")


@dataclass(frozen=True, slots=True)
class Outcome:
    account_id: str
    state: derisk.DeriskState
    regime: derisk.Regime
    moved: bool
    intents: tuple[ReductionIntent, ...] = ()


def intent_to_dict(intent: ReductionIntent) -> dict[str, Any]:
    return {
        "id": str(intent.id),
        "tenant_id": str(intent.tenant_id),
        "account_id": str(intent.account_id),
        "instrument_id": str(intent.instrument_id),
        "symbol": intent.symbol,
        "side": intent.side,
        "quantity": format(intent.quantity.normalize(), "f"),
        "day": intent.day.isoformat(),
        "reason": intent.reason,
        "inputs": intent.inputs,
        "status": intent.status,
        "order_id": str(intent.order_id) if intent.order_id else None,
        "error": intent.error,
        "created_at": intent.created_at.isoformat(),
    }


def intents_of(row: AccountRisk | None) -> list[dict[str, Any]]:
    """The reduction intents of the account's current de-risk day (for /risk/status)."""
    if row is None or row.derisk_state != derisk.DeriskState.HARD_DERISK or row.derisk_day is None:
        return []
    intents = ReductionIntent.objects.filter(account_id=row.account_id, day=row.derisk_day).order_by("symbol")
    return [intent_to_dict(intent) for intent in intents]


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


def limit_price(*, side: str, last: Decimal, tick: Decimal) -> Decimal:
    """A marketable limit: `LIMIT_THROUGH` through the last price, on the tick grid."""
    if side == "SELL":
        raw, rounding = last * (1 - LIMIT_THROUGH), ROUND_FLOOR
    else:
        raw, rounding = last * (1 + LIMIT_THROUGH), ROUND_CEILING
    price = (raw / tick).to_integral_value(rounding=rounding) * tick
    return max(price, tick)


def _plan(
    *, account: BrokerAccount, row: AccountRisk, config: derisk.DeriskConfig, day: Any, now: datetime
) -> list[ReductionIntent]:
    marks = account_marks(account=account, row=row, now=now)
    positions = {
        str(p.instrument_id): p
        for p in Position.objects.filter(account=account).exclude(quantity=0).select_related("instrument")
    }
    lines = []
    for key, holding in marks.holdings.items():
        position = positions.get(key)
        if position is None or holding.price is None or not holding.quantity:
            continue
        instrument: Instrument = position.instrument
        lines.append(
            derisk.Line(holding.symbol, key, holding.quantity, holding.price, holding.multiplier, instrument.lot_size)
        )
    plan = derisk.reduction_plan(lines, equity=marks.equity, target_pct=config.target_gross_pct)
    if not plan:
        return []
    gross_now = sum((abs(line.quantity) * line.price * line.multiplier for line in lines), Decimal(0))
    gross_then = derisk.gross_after(lines, plan)
    inputs = {
        "equity": _plain(marks.equity),
        "gross_pct": str(pct(gross_now, marks.equity)) if marks.equity > 0 else None,
        "gross_pct_after": str(pct(gross_then, marks.equity)) if marks.equity > 0 else None,
        "target_gross_pct": str(config.target_gross_pct),
    }
    prices = {line.instrument_id: line.price for line in lines}
    rows = [
        ReductionIntent(
            id=uuid.uuid4(),
            tenant_id=account.tenant_id,
            account=account,
            instrument_id=reduction.instrument_id,
            day=day,
            symbol=reduction.symbol,
            side=reduction.side,
            quantity=reduction.quantity,
            reason=f"HARD_DERISK: reduce gross exposure to ≤ {config.target_gross_pct}% of equity",
            inputs={
                **inputs,
                "last": _plain(prices[reduction.instrument_id]),
                "limit_price": _plain(
                    limit_price(
                        side=reduction.side,
                        last=prices[reduction.instrument_id],
                        tick=positions[reduction.instrument_id].instrument.tick_size,
                    )
                ),
            },
            created_at=now,
            updated_at=now,
        )
        for reduction in plan
    ]
    ReductionIntent.objects.bulk_create(rows, ignore_conflicts=True)
    created = set(ReductionIntent.objects.filter(id__in=[r.id for r in rows]).values_list("id", flat=True))
    return [intent for intent in rows if intent.id in created]


def playbook_account(*, account: BrokerAccount, now: datetime) -> Outcome | None:
    """Move one account's de-risk state and, in HARD_DERISK, record its reduction intents."""
    if calendar_for(account, AccountRisk.objects.filter(account=account).first()) == ALWAYS_OPEN:
        return None  # no schedule: nothing to lock or write
    account_risk_for(account)
    with transaction.atomic(durable=True):
        row = AccountRisk.objects.select_for_update().get(account=account)
        calendar = calendar_for(account, row)
        if calendar == ALWAYS_OPEN:  # changed in the meantime
            return None
        config = defaults().derisk_for(account.tenant.slug)
        today = session(calendar, now)
        regime = derisk.regime(now, today, config)
        previous = derisk.DeriskState(row.derisk_state)
        step = derisk.derisk_next(previous=previous, previous_day=row.derisk_day, now=now, config=config)
        moved = step.state != previous
        if moved or step.day != row.derisk_day:
            before = {"derisk_state": previous.value, "derisk_day": str(row.derisk_day) if row.derisk_day else None}
            row.derisk_state, row.derisk_day = step.state.value, step.day
            if moved:
                row.derisk_at, row.derisk_reason = now, step.reason[:255]
            row.save(update_fields=["derisk_state", "derisk_day", "derisk_at", "derisk_reason"])
            if moved:
                after = {"derisk_state": step.state.value, "derisk_day": str(step.day), "reason": step.reason}
                outbox_emit(
                    tenant_id=account.tenant_id,
                    stream=RISK,
                    kind=DERISK_CHANGED,
                    aggregate_type="account_risk",
                    aggregate_id=account.id,
                    payload={
                        "account_id": str(account.id),
                        "account_code": account.account_code,
                        "from": previous.value,
                        "to": step.state.value,
                        "reason": step.reason,
                        "regime": regime.value,
                        "calendar": calendar,
                        "at": now.isoformat(),
                    },
                )
                audit_record(
                    tenant_id=account.tenant_id,
                    actor=PLAYBOOK,
                    action="risk.derisk.transition",
                    resource_type="account_risk",
                    resource_id=account.id,
                    before=before,
                    after=after,
                )
        intents: list[ReductionIntent] = []
        if step.state == derisk.DeriskState.HARD_DERISK and today.open_at is not None:
            intents = _plan(account=account, row=row, config=config, day=step.day, now=now)
            for intent in intents:
                payload = intent_to_dict(intent)
                outbox_emit(
                    tenant_id=account.tenant_id,
                    stream=INTENTS,
                    kind=REDUCTION_INTENT,
                    aggregate_type="reduction_intent",
                    aggregate_id=intent.id,
                    payload=payload,
                )
            for intent in intents:  # audit rows last
                audit_record(
                    tenant_id=account.tenant_id,
                    actor=PLAYBOOK,
                    action="risk.intent.create",
                    resource_type="reduction_intent",
                    resource_id=intent.id,
                    after=intent_to_dict(intent),
                )
    if moved or intents:
        log.info("risk.playbook", account=account.account_code, state=step.state.value, intents=len(intents))
    return Outcome(str(account.id), step.state, regime, moved, tuple(intents))


def playbook_run(*, now: datetime) -> list[Outcome]:
    """Run the playbook for every account (those on an always-open calendar are skipped)."""
    outcomes = []
    for account in BrokerAccount.objects.select_related("tenant").order_by("id"):
        outcome = playbook_account(account=account, now=now)
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes


@transaction.atomic(durable=True)
def intent_settle(*, intent_id: Any, order_id: Any | None, error: str, actor: Actor) -> ReductionIntent | None:
    """Record what became of an intent (its order, or the refusal); audited. Only PENDING intents move."""
    intent = ReductionIntent.objects.select_for_update().filter(id=intent_id).first()
    if intent is None or intent.status != ReductionIntent.Status.PENDING:
        return intent
    before = intent_to_dict(intent)
    intent.status = ReductionIntent.Status.ORDERED if order_id else ReductionIntent.Status.FAILED
    intent.order_id = order_id
    intent.error = error[:500]
    intent.updated_at = timezone.now()
    intent.save(update_fields=["status", "order_id", "error", "updated_at"])
    audit_record(
        tenant_id=intent.tenant_id,
        actor=actor,
        action="risk.intent.settle",
        resource_type="reduction_intent",
        resource_id=intent.id,
        before=before,
        after=intent_to_dict(intent),
    )
    return intent
