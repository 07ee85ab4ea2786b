"""The market data router of API.md: `/marketdata/subscriptions` and `/marketdata/{symbol}/last`."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.http import HttpRequest
from ninja import Query, Router, Status

from apps.common.pagination import paginate
from apps.common.schemas import Page
from apps.marketdata import selectors, services
from apps.marketdata.models import MarketDataSubscription
from apps.marketdata.schemas import (
    ListingQuery,
    QuoteOut,
    SubscriptionIn,
    SubscriptionOut,
    SubscriptionQuery,
    SymbolQuery,
)
from apps.marketdata.serializers import line_to_dict, quote_to_dict, subscription_to_dict
from apps.tenants.auth import scoped
from apps.tenants.principal import actor_kwargs, principal_of

router = Router(tags=["marketdata"])


def _with_lines(rows: list[MarketDataSubscription]) -> list[dict[str, Any]]:
    lines = selectors.line_states(instrument_ids=[row.instrument_id for row in rows])
    return [
        {**subscription_to_dict(row), "line": line_to_dict(lines.get(str(row.instrument_id), selectors.PENDING))}
        for row in rows
    ]


@router.get("/subscriptions", response=Page[SubscriptionOut], auth=scoped("marketdata:view"))
def list_marketdata_subscriptions(request: HttpRequest, query: Query[SubscriptionQuery]) -> dict[str, Any]:
    rows = selectors.subscription_list(tenant=principal_of(request).tenant, symbol=query.symbol)
    page, next_cursor = paginate(rows, limit=query.limit, cursor=query.cursor)
    return {"items": _with_lines(page), "next": next_cursor}


@router.post(
    "/subscriptions", response={200: SubscriptionOut, 201: SubscriptionOut}, auth=scoped("marketdata:subscribe")
)
def create_marketdata_subscription(request: HttpRequest, payload: SubscriptionIn) -> Status:
    subscription, created = services.subscription_create(
        **actor_kwargs(request), symbol=payload.symbol, exchange=payload.exchange, currency=payload.currency
    )
    return Status(201 if created else 200, _with_lines([subscription])[0])


@router.delete("/subscriptions", response={204: None}, auth=scoped("marketdata:subscribe"))
def delete_marketdata_subscription_by_symbol(request: HttpRequest, query: Query[SymbolQuery]) -> Status:
    services.subscription_delete_for_symbol(
        **actor_kwargs(request), symbol=query.symbol, exchange=query.exchange, currency=query.currency
    )
    return Status(204, None)


@router.delete("/subscriptions/{subscription_id}", response={204: None}, auth=scoped("marketdata:subscribe"))
def delete_marketdata_subscription(request: HttpRequest, subscription_id: UUID) -> Status:
    services.subscription_delete(**actor_kwargs(request), subscription_id=subscription_id)
    return Status(204, None)


@router.get("/{symbol}/last", response=QuoteOut, auth=scoped("marketdata:view"))
def get_marketdata_last(request: HttpRequest, symbol: str, query: Query[ListingQuery]) -> dict[str, Any]:
    instrument = selectors.instrument_find(symbol=symbol, exchange=query.exchange, currency=query.currency)
    return quote_to_dict(instrument.symbol, instrument.id, selectors.quote_get(instrument=instrument))
