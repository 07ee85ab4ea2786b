"""The broker event format of the `ib:events` stream (spec 000), as the gateway writes it.

One stream entry per event, flat string fields so that the event tail (`/events/tail`) can filter
without parsing: `kind`, `tenant_id`, `account_id`, `order_id`, `msg_id`, `order_index`, `at`
(RFC 3339 UTC), `source`, and `data`: JSON with the remaining fields of
`apps.orders.services.broker_events.BrokerEvent` under the same names (`broker_order_id`,
`reason`, `request`, `fill` with `exec_id`, `quantity`, `price`, `commission`, `currency`,
`executed_at`; decimals as strings), `details` (strings, adoption only). `decode` returns exactly the
keyword arguments of `BrokerEvent` (with `fill` as a dict of `Fill`'s arguments), so the applier
builds one in a line.

Kinds: `accepted`, `execution`, `cancelled`, `rejected`, `expired`; `commission` (a commission
report that came after its execution was published: `fill` again, with the commission, applied by
exec id) and `adopted` (an order found at IB that the OMS did not place: `details` describe it,
and `order_id` is the id `adopted_order_id` gives it). Pure: no Django.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid5

import orjson

KINDS = frozenset({"accepted", "execution", "cancelled", "rejected", "expired", "commission", "adopted"})
SOURCE = "ib-gateway"
ADOPTED_NAMESPACE = UUID("6f1d3c2a-5b7e-4c1a-9d3e-2a7b8c9d0e1f")


def adopted_order_id(account_id: str, perm_id: int) -> str:
    """The OMS id of an order adopted from IB: the same for the same (account, permId), always."""
    return str(uuid5(ADOPTED_NAMESPACE, f"{account_id}:{perm_id}"))


@dataclass(frozen=True, slots=True)
class WireFill:
    exec_id: str
    quantity: Decimal
    price: Decimal
    commission: Decimal
    currency: str
    executed_at: datetime


@dataclass(frozen=True, slots=True)
class WireEvent:
    """A broker event about one of our orders, as published."""

    kind: str
    tenant_id: str
    account_id: str
    order_id: str
    broker_order_id: str = ""
    reason: str = ""
    request: str = "submit"
    fill: WireFill | None = None
    msg_id: str = ""
    order_index: int | None = None
    details: dict[str, str] | None = None


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def encode(event: WireEvent, *, now: datetime | None = None) -> dict[str, str]:
    """Stream fields of one event."""
    if event.kind not in KINDS:
        raise ValueError(f"unknown broker event kind {event.kind!r}")
    data: dict[str, Any] = {
        "broker_order_id": event.broker_order_id,
        "reason": event.reason,
        "request": event.request,
        "fill": None,
    }
    if event.details is not None:
        data["details"] = event.details
    if event.fill is not None:
        fill = event.fill
        data["fill"] = {
            "exec_id": fill.exec_id,
            "quantity": str(fill.quantity),
            "price": str(fill.price),
            "commission": str(fill.commission),
            "currency": fill.currency,
            "executed_at": _utc(fill.executed_at),
        }
    return {
        "kind": event.kind,
        "tenant_id": event.tenant_id,
        "account_id": event.account_id,
        "order_id": event.order_id,
        "msg_id": event.msg_id,
        "order_index": "" if event.order_index is None else str(event.order_index),
        "at": _utc(now or datetime.now(UTC)),
        "source": SOURCE,
        "data": orjson.dumps(data).decode(),
    }


def decode(fields: dict[str, str]) -> dict[str, Any]:
    """The keyword arguments of `BrokerEvent` for one entry (`fill` as `Fill`'s keyword arguments)."""
    data = orjson.loads(fields.get("data") or "{}")
    fill = data.get("fill")
    arguments: dict[str, Any] = {}
    if data.get("details") is not None:
        arguments["details"] = {str(key): str(value) for key, value in data["details"].items()}
    return arguments | {
        "kind": fields["kind"],
        "account_id": UUID(fields["account_id"]),
        "order_id": UUID(fields["order_id"]),
        "broker_order_id": data.get("broker_order_id") or "",
        "reason": data.get("reason") or "",
        "request": data.get("request") or "submit",
        "fill": None
        if not fill
        else {
            "exec_id": fill["exec_id"],
            "quantity": Decimal(fill["quantity"]),
            "price": Decimal(fill["price"]),
            "commission": Decimal(fill["commission"]),
            "currency": fill["currency"],
            "executed_at": datetime.fromisoformat(fill["executed_at"].replace("Z", "+00:00")),
        },
    }
