"""Reads of risk: limits, overrides, kill switches, breakers, and `/risk/status`."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.brokers.models import BrokerAccount
from apps.brokers.permissions import accounts_for
from apps.common.queries import one_or_not_found
from apps.compliance.calendars import ALWAYS_OPEN, session
from apps.risk import derisk
from apps.risk.book import book_for
from apps.risk.config import defaults
from apps.risk.exposure import Working, gross, pct
from apps.risk.gates import LimitKind, LimitScope, text
from apps.risk.models import AccountRisk, CircuitBreaker, KillSwitch, RiskLimit, RiskOverride
from apps.risk.serializers import (
    account_risk_to_dict,
    breaker_to_dict,
    kill_switch_to_dict,
    limit_to_dict,
    override_to_dict,
    ts,
)
from apps.risk.services.breakers import breaker_rules
from apps.risk.services.exposure_feed import bucket_status
from apps.risk.services.playbook import intents_of
from apps.risk.services.pretrade import BookQuery, account_calendar, account_marks, derisk_state_of
from apps.tenants.models import Tenant, User
from apps.tenants.scopes import Role


def risk_limit_list(*, tenant: Tenant, kind: str | None = None, scope: str | None = None) -> QuerySet[RiskLimit]:
    """The tenant's limits, optionally filtered."""
    rows = RiskLimit.objects.filter(tenant=tenant)
    if kind:
        rows = rows.filter(kind=kind)
    return rows.filter(scope=scope) if scope else rows


def risk_limit_get(*, tenant: Tenant, limit_id: UUID) -> RiskLimit:
    """One limit of the tenant; NotFound otherwise."""
    return one_or_not_found(RiskLimit.objects, f"Risk limit {limit_id} not found", tenant=tenant, id=limit_id)


def risk_override_list(*, tenant: Tenant, active: bool | None = None) -> QuerySet[RiskOverride]:
    """The tenant's overrides (active ones only, or inactive ones only, when asked)."""
    rows = RiskOverride.objects.filter(tenant=tenant)
    now = timezone.now()
    live = Q(revoked_at__isnull=True, valid_from__lte=now, valid_until__gt=now)
    if active is None:
        return rows
    return rows.filter(live) if active else rows.exclude(live)


def risk_override_get(*, tenant: Tenant, override_id: UUID) -> RiskOverride:
    """One override of the tenant; NotFound otherwise."""
    return one_or_not_found(RiskOverride.objects, f"Override {override_id} not found", tenant=tenant, id=override_id)


def kill_switch_list(*, tenant: Tenant, active: bool | None = None) -> QuerySet[KillSwitch]:
    """The tenant's kill switches, newest first."""
    rows = KillSwitch.objects.filter(tenant=tenant)
    return rows if active is None else rows.filter(active=active)


def kill_switch_get(*, tenant: Tenant, kill_switch_id: UUID) -> KillSwitch:
    """One kill switch of the tenant; NotFound otherwise."""
    return one_or_not_found(
        KillSwitch.objects, f"Kill switch {kill_switch_id} not found", tenant=tenant, id=kill_switch_id
    )


def breaker_list(*, tenant: Tenant, state: str | None = None) -> QuerySet[CircuitBreaker]:
    """The tenant's circuit breakers (each one that ever tripped has a row)."""
    rows = CircuitBreaker.objects.filter(tenant=tenant)
    return rows.filter(state=state) if state else rows


def account_risk_get(*, account: BrokerAccount) -> AccountRisk:
    """The account's risk settings (the defaults, unsaved, for an account that has none yet)."""
    row = AccountRisk.objects.filter(account=account).first()
    return row or AccountRisk(account=account, tenant_id=account.tenant_id, updated_at=timezone.now())


def _account_status(account: BrokerAccount, row: AccountRisk | None, now: datetime) -> dict[str, Any]:
    calendar = account_calendar(account, row)
    marks = account_marks(account=account, row=row, now=now)
    book, known = book_for(BookQuery(account.id, None, since=now - timedelta(minutes=1)))
    working = [
        Working(str(o.instrument_id), o.remaining if o.side == "BUY" else -o.remaining) for o in book.open_orders
    ]
    exposure = gross(marks.holdings, working)
    current, potential = exposure.percent(marks.equity)
    playbook = defaults().derisk_for(account.tenant.slug) if defaults().tenants else defaults().derisk
    step = derisk_state_of(row=row, calendar=calendar, now=now, config=playbook)
    regime = derisk.regime(now, session(calendar, now), playbook) if calendar != ALWAYS_OPEN else None
    peak = max(row.peak_equity if row else Decimal(0), marks.equity)
    return {
        "account_id": str(account.id),
        "account_code": account.account_code,
        "calendar": calendar,
        "regime": regime.value if regime else None,
        "equity": text(marks.equity),
        "peak_equity": text(peak),
        "day_pnl": text(marks.day_pnl),
        "drawdown": text(peak - marks.equity),
        "gross_exposure": {
            "current": text(current),
            "potential": text(potential),
            "current_notional": text(exposure.current),
            "potential_notional": text(exposure.potential),
            "unpriced": list(exposure.unpriced),
            "hard_cap": text(defaults().max_gross_exposure_pct),
            "buckets": bucket_status(marks.holdings, working, account=account, equity=marks.equity),
        },
        "open_orders": len(book.open_orders) if known else None,
        "submissions_last_minute": len(book.submissions) if known else None,
        "manual_trading_state": row.trading_state if row else derisk.TradingState.ACTIVE.value,
        "derisk_state": step.state.value if step else derisk.DeriskState.NORMAL.value,
        "derisk_reason": step.reason if step else "always-open calendar: no de-risk schedule",
        "derisk_since": row.derisk_at.isoformat() if row is not None and row.derisk_at else None,
        "reduction_intents": intents_of(row),
        "settings": account_risk_to_dict(row) if row else None,
        "_positions": dict(marks.holdings),
    }


def _usage(limit: RiskLimit, accounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Current usage of a limit per account (order-level kinds have none between orders)."""
    kind = LimitKind(limit.kind)
    covered = [a for a in accounts if limit.scope != LimitScope.ACCOUNT or a["account_id"] == limit.scope_id]
    usage = []
    for account in covered:
        value: str | None = None
        if kind == LimitKind.MAX_GROSS_EXPOSURE:
            value = account["gross_exposure"]["potential"]
        elif kind == LimitKind.MAX_OPEN_ORDERS:
            value = None if account["open_orders"] is None else str(account["open_orders"])
        elif kind == LimitKind.DAILY_LOSS:
            value = text(max(Decimal(0), -Decimal(account["day_pnl"])))
        elif kind == LimitKind.TRAILING_DRAWDOWN:
            value = account["drawdown"]
        elif kind == LimitKind.ORDER_RATE:
            value = None if account["submissions_last_minute"] is None else str(account["submissions_last_minute"])
        elif kind in (LimitKind.MAX_POSITION_QTY, LimitKind.CONCENTRATION) and limit.scope == LimitScope.INSTRUMENT:
            held = next(
                (h for key, h in account["_positions"].items() if limit.scope_id in (key, h.symbol.upper())), None
            )
            if held is not None and kind == LimitKind.MAX_POSITION_QTY:
                value = text(abs(held.quantity))
            elif held is not None and held.price is not None and Decimal(account["equity"]) > 0:
                value = text(pct(abs(held.quantity) * held.price * held.multiplier, Decimal(account["equity"])))
        if value is not None:
            usage.append({"account_id": account["account_id"], "value": value})
    return usage


def risk_status(*, tenant: Tenant, user: User, role: Role | str) -> dict[str, Any]:
    """Limits with usage, exposure and de-risk state per visible account, halted scopes, open breakers."""
    now = timezone.now()
    accounts = list(accounts_for(tenant=tenant, user=user, role=role).order_by("account_code"))
    rows = {row.account_id: row for row in AccountRisk.objects.filter(account__in=accounts)}
    statuses = [_account_status(account, rows.get(account.id), now) for account in accounts]
    switches = list(kill_switch_list(tenant=tenant, active=True).order_by("engaged_at"))
    breakers = list(breaker_list(tenant=tenant, state=CircuitBreaker.State.OPEN).order_by("tripped_at"))
    halted = [
        {"scope": s.scope, "scope_id": s.scope_id or None, "source": "KILL_SWITCH", "id": str(s.id), "reason": s.reason}
        for s in switches
    ]
    for breaker in breakers:
        scope = {
            "scope": "ACCOUNT" if breaker.account_id else "TENANT",
            "scope_id": str(breaker.account_id) if breaker.account_id else None,
        }
        entry = {**scope, "source": f"BREAKER:{breaker.kind}", "id": str(breaker.id), "reason": breaker.reason}
        (halted if breaker.action == derisk.TradingState.HALTED else []).append(entry)
    for status in statuses:
        account_halted = any(h["scope"] == "TENANT" or h["scope_id"] == status["account_id"] for h in halted)
        reducing = status["derisk_state"] != derisk.DeriskState.NORMAL or any(
            b.action == derisk.TradingState.REDUCING and b.account_id in (None, UUID(status["account_id"]))
            for b in breakers
        )
        status["trading_state"] = derisk.trading_state(
            halted=account_halted, reducing=reducing, manual=derisk.TradingState(status["manual_trading_state"])
        ).value
        if status["manual_trading_state"] == derisk.TradingState.HALTED:
            halted.append(
                {
                    "scope": "ACCOUNT",
                    "scope_id": status["account_id"],
                    "source": "MANUAL",
                    "id": None,
                    "reason": "set to HALTED by a risk manager",
                }
            )
    limits = list(risk_limit_list(tenant=tenant).order_by("kind", "scope", "created_at"))
    reply = {
        "as_of": ts(now),
        "limits": [{**limit_to_dict(limit), "usage": _usage(limit, statuses)} for limit in limits],
        "default_limits": [
            {
                "kind": LimitKind.MAX_GROSS_EXPOSURE.value,
                "value": text(defaults().max_gross_exposure_pct),
                "applies": "accounts without a TENANT or ACCOUNT MAX_GROSS_EXPOSURE limit",
            }
        ],
        "accounts": [{k: v for k, v in status.items() if not k.startswith("_")} for status in statuses],
        "halted": halted,
        "kill_switches": [kill_switch_to_dict(s) for s in switches],
        "breakers": [breaker_to_dict(b) for b in breakers],
        "breaker_rules": breaker_rules(tenant_id=tenant.id),
        "overrides": [override_to_dict(o, now=now) for o in risk_override_list(tenant=tenant, active=True)],
    }
    return reply
