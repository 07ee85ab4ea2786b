"""Reads of positions and P&L, scoped to the tenant and to the accounts the member may see."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db.models import QuerySet
from django.utils import timezone

from apps.brokers.permissions import accounts_for
from apps.common.errors import NotFound, ValidationFailed
from apps.common.redis import get_redis
from apps.events.prices import LastPrice, last_prices
from apps.portfolio.models import PnlSnapshot, Position
from apps.portfolio.serializers import dec, money
from apps.portfolio.services import AccountPnl, account_pnl, snapshot_to_dict
from apps.tenants.models import Tenant, User
from apps.tenants.scopes import Role

MAX_HISTORY_DAYS = 366


@dataclass(frozen=True, slots=True)
class PositionFilters:
    account_id: UUID | None = None
    symbol: str | None = None
    include_flat: bool = False


def _visible_positions(*, tenant: Tenant, user: User, role: Role | str) -> QuerySet[Position]:
    accounts = accounts_for(tenant=tenant, user=user, role=role)
    return Position.objects.filter(tenant=tenant, account__in=accounts.values("id")).select_related("instrument")


def position_list(*, tenant: Tenant, user: User, role: Role | str, filters: PositionFilters) -> QuerySet[Position]:
    """The member's visible positions (open ones unless `include_flat`)."""
    positions = _visible_positions(tenant=tenant, user=user, role=role)
    if filters.account_id is not None:
        positions = positions.filter(account_id=filters.account_id)
    if filters.symbol:
        positions = positions.filter(symbol__iexact=filters.symbol)
    if not filters.include_flat:
        positions = positions.exclude(quantity=0)
    return positions


def position_get(
    *, tenant: Tenant, user: User, role: Role | str, symbol: str, account_id: UUID | None, currency: str | None
) -> Position:
    """The member's position in `symbol`; several accounts (or currencies) holding it need a choice."""
    positions = _visible_positions(tenant=tenant, user=user, role=role).filter(symbol__iexact=symbol)
    if account_id is not None:
        positions = positions.filter(account_id=account_id)
    if currency:
        positions = positions.filter(currency=currency.upper())
    found = list(positions.order_by("account_id", "currency")[:10])
    if not found:
        raise NotFound(f"No position in {symbol}")
    if len(found) > 1:
        held = sorted({f"{position.account_id}/{position.currency}" for position in found})
        raise ValidationFailed(
            f"{symbol} is held in {len(found)} positions ({', '.join(held)})",
            fields={"account_id": [f"required: {symbol} is held on more than one account or currency"]},
            hint="Add ?account_id= (and ?currency= for a symbol listed in several currencies)",
        )
    return found[0]


def prices_for(positions: list[Position]) -> dict[str, LastPrice]:
    """Cached last prices of the positions' instruments (empty when Redis is away)."""
    return last_prices(client=get_redis(), instrument_ids=[position.instrument_id for position in positions])


def _figures(row: AccountPnl) -> dict[str, Any]:
    return {
        "account_id": str(row.account_id),
        "currency": row.currency,
        "realized_pnl": dec(row.realized),
        "unrealized_pnl": dec(row.unrealized),
        "total_pnl": dec(row.realized + row.unrealized),
        "open_positions": row.open_positions,
        "unpriced_positions": row.unpriced_positions,
    }


def _totals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sum account rows per currency (amounts in different currencies are never added)."""
    sums: dict[str, dict[str, Decimal]] = {}
    for row in rows:
        total = sums.setdefault(row["currency"], {"realized_pnl": Decimal(0), "unrealized_pnl": Decimal(0)})
        total["realized_pnl"] += Decimal(row["realized_pnl"])
        total["unrealized_pnl"] += Decimal(row["unrealized_pnl"])
    return [
        {
            "currency": currency,
            "realized_pnl": dec(money(total["realized_pnl"])),
            "unrealized_pnl": dec(money(total["unrealized_pnl"])),
            "total_pnl": dec(money(total["realized_pnl"] + total["unrealized_pnl"])),
        }
        for currency, total in sorted(sums.items())
    ]


def pnl_today(*, tenant: Tenant, user: User, role: Role | str, account_id: UUID | None = None) -> dict[str, Any]:
    """Today's (UTC) realised P&L and the current mark of open positions, per account and in total."""
    positions = list(_visible_positions(tenant=tenant, user=user, role=role))
    if account_id is not None:
        positions = [position for position in positions if position.account_id == account_id]
    today = timezone.now().astimezone(UTC).date()
    prices = prices_for([position for position in positions if position.quantity])
    rows = [_figures(row) for row in account_pnl(positions=positions, prices=prices, day=today)]
    return {"date": today.isoformat(), "accounts": rows, "total": _totals(rows)}


def pnl_history(
    *, tenant: Tenant, user: User, role: Role | str, start: date, end: date, account_id: UUID | None = None
) -> list[dict[str, Any]]:
    """Daily snapshots between `start` and `end` (inclusive), one item per day, oldest first."""
    if start > end:
        raise ValidationFailed("from is after to", fields={"from": ["must not be after to"]})
    if (end - start).days >= MAX_HISTORY_DAYS:
        raise ValidationFailed("Range too long", fields={"from": [f"at most {MAX_HISTORY_DAYS} days before to"]})
    accounts = accounts_for(tenant=tenant, user=user, role=role)
    snapshots = PnlSnapshot.objects.filter(tenant=tenant, account__in=accounts.values("id"), day__range=(start, end))
    if account_id is not None:
        snapshots = snapshots.filter(account_id=account_id)
    days: dict[date, list[dict[str, Any]]] = {}
    for snapshot in snapshots.order_by("day", "account_id", "currency"):
        days.setdefault(snapshot.day, []).append(snapshot_to_dict(snapshot))
    return [{"date": day.isoformat(), "accounts": rows, "total": _totals(rows)} for day, rows in days.items()]
