"""The Positions and P&L routers of API.md: `/positions`, `/positions/{symbol}`, `/pnl/today`, `/pnl/history`."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja import Query, Router

from apps.common.pagination import paginate
from apps.common.schemas import Page
from apps.portfolio import selectors
from apps.portfolio.schemas import (
    PnlHistoryOut,
    PnlHistoryQuery,
    PnlTodayOut,
    PnlTodayQuery,
    PositionListQuery,
    PositionOut,
    PositionQuery,
)
from apps.portfolio.serializers import position_to_dict
from apps.tenants.auth import scoped
from apps.tenants.principal import viewer_kwargs

positions_router = Router(tags=["portfolio"])
pnl_router = Router(tags=["portfolio"])
DEFAULT_HISTORY_DAYS = 30


@positions_router.get("", response=Page[PositionOut], auth=scoped("positions:view"))
def list_positions(request: HttpRequest, query: Query[PositionListQuery]) -> dict[str, Any]:
    filters = selectors.PositionFilters(
        account_id=query.account_id, symbol=query.symbol, include_flat=query.include_flat
    )
    positions = selectors.position_list(**viewer_kwargs(request), filters=filters)
    rows, next_cursor = paginate(positions, limit=query.limit, cursor=query.cursor, time_field="updated_at")
    prices = selectors.prices_for(rows)
    items = [position_to_dict(row, price=prices.get(str(row.instrument_id))) for row in rows]
    return {"items": items, "next": next_cursor}


@positions_router.get("/{symbol}", response=PositionOut, auth=scoped("positions:view"))
def get_position(request: HttpRequest, symbol: str, query: Query[PositionQuery]) -> dict[str, Any]:
    position = selectors.position_get(
        **viewer_kwargs(request), symbol=symbol, account_id=query.account_id, currency=query.currency
    )
    return position_to_dict(position, price=selectors.prices_for([position]).get(str(position.instrument_id)))


@pnl_router.get("/today", response=PnlTodayOut, auth=scoped("pnl:view"))
def get_pnl_today(request: HttpRequest, query: Query[PnlTodayQuery]) -> dict[str, Any]:
    return selectors.pnl_today(**viewer_kwargs(request), account_id=query.account_id)


@pnl_router.get("/history", response=PnlHistoryOut, auth=scoped("pnl:view"))
def get_pnl_history(request: HttpRequest, query: Query[PnlHistoryQuery]) -> dict[str, Any]:
    end = query.end or timezone.now().astimezone(UTC).date()
    start = query.start or end - timedelta(days=DEFAULT_HISTORY_DAYS)
    items = selectors.pnl_history(**viewer_kwargs(request), start=start, end=end, account_id=query.account_id)
    return {"items": items, "next": None}
