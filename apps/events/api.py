"""The `/events` router: the broker event log tail."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from pydantic import ConfigDict

from apps.common.redis import get_redis
from apps.events.selectors import TailFilters, broker_event_tail
from apps.tenants.auth import scoped
from apps.tenants.principal import Principal

router = Router(tags=["events"])


class TailQuery(Schema):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=100, ge=1, le=1000)
    msg_id: str | None = Field(default=None, max_length=64)
    order_index: int | None = Field(default=None, ge=0)
    kind: str | None = Field(default=None, max_length=64)


class BrokerEventOut(Schema):
    id: str
    kind: str
    msg_id: str | None
    order_index: int | None
    order_id: str | None
    at: str | None
    data: Any


class TailOut(Schema):
    items: list[BrokerEventOut]


@router.get("/tail", response=TailOut, auth=scoped("orders:view"))
def tail_events(request: HttpRequest, query: Query[TailQuery]) -> dict[str, Any]:
    principal: Principal = request.auth  # type: ignore[attr-defined]
    filters = TailFilters(msg_id=query.msg_id, order_index=query.order_index, kind=query.kind)
    items = broker_event_tail(tenant_id=principal.tenant.id, client=get_redis(), limit=query.limit, filters=filters)
    return {"items": items}
