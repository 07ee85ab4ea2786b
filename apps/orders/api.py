"""The Orders router of API.md: place, preview, list, get (ETag), modify (If-Match), cancel, batch,
executions and events."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

import orjson
from django.http import HttpRequest, HttpResponse
from ninja import Header, Query, Router, Status
from pydantic import ValidationError

from apps.common.errors import DomainError, PreconditionRequired, ValidationFailed
from apps.common.pagination import paginate, parse_fields, select_fields
from apps.common.schemas import Page
from apps.orders import selectors, validation
from apps.orders.schemas import (
    BatchCancelIn,
    BatchIn,
    BatchOut,
    ExecutionOut,
    OrderEventOut,
    OrderIn,
    OrderListQuery,
    OrderOut,
    OrderPatch,
    PageQuery,
    PreviewOut,
)
from apps.orders.serializers import event_to_dict, execution_to_dict, order_to_dict
from apps.orders.services import changes, placement
from apps.orders.services.idempotency import request_fingerprint
from apps.tenants.auth import scoped
from apps.tenants.principal import Principal, viewer_kwargs

router = Router(tags=["orders"])
executions_router = Router(tags=["orders"])

IdempotencyKey = Header(default=None, alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[!-~]+$")
IF_MATCH = re.compile(r'^\s*(?:W/)?"?(\d{1,9})"?\s*$')


def _member(request: HttpRequest) -> placement.Member:
    principal: Principal = request.auth  # type: ignore[attr-defined]
    return placement.Member(tenant=principal.tenant, actor=principal.actor, user=principal.user, role=principal.role)


def _place_request(payload: OrderIn) -> placement.PlaceRequest:
    def leg(value: Any) -> validation.Leg | None:
        return None if value is None else validation.Leg(limit_price=value.limit_price, stop_price=value.stop_price)

    return placement.PlaceRequest(
        account_id=payload.account_id,
        symbol=payload.symbol,
        currency=payload.currency,
        client_order_id=payload.client_order_id,
        strategy_id=payload.strategy_id,
        metadata=payload.metadata,
        outside_rth=payload.outside_rth,
        fields=validation.OrderFields(
            side=payload.side,
            quantity=payload.quantity,
            order_type=payload.order_type,
            time_in_force=payload.time_in_force,
            limit_price=payload.limit_price,
            stop_price=payload.stop_price,
            trail_amount=payload.trail_amount,
            trail_percent=payload.trail_percent,
            good_till=payload.good_till,
            order_class=payload.order_class,
            take_profit=leg(payload.take_profit),
            stop_loss=leg(payload.stop_loss),
        ),
    )


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> HttpResponse:
    response = HttpResponse(orjson.dumps(body), status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _outcome(outcome: placement.Outcome) -> HttpResponse:
    return _json(outcome.status, outcome.body, {"Idempotent-Replayed": "true"} if outcome.replayed else None)


@router.post("", response={201: OrderOut, 200: OrderOut}, auth=scoped("orders:place"))
def place_order(request: HttpRequest, payload: OrderIn, idempotency_key: str | None = IdempotencyKey) -> HttpResponse:
    # The fingerprint only serves a reused Idempotency-Key: none to compute without one.
    fingerprint = (
        request_fingerprint(operation="POST /orders", payload=payload.model_dump(mode="json"))
        if idempotency_key
        else ""
    )
    outcome = placement.order_place(
        member=_member(request),
        request=_place_request(payload),
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )
    return _outcome(outcome)


@router.post("/preview", response=PreviewOut, auth=scoped("orders:place"))
def preview_order(request: HttpRequest, payload: OrderIn) -> dict[str, Any]:
    return placement.order_preview(member=_member(request), request=_place_request(payload))


def _item_errors(error: ValidationError) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for item in error.errors():
        # Echoed field names are the client's: keep them storable (no NUL) in the idempotency record.
        path = ".".join(str(part) for part in item.get("loc", ())).replace("\x00", "\ufffd") or "body"
        message = "unknown field" if item.get("type") == "extra_forbidden" else str(item.get("msg", "invalid"))
        fields.setdefault(path, []).append(message.removeprefix("Value error, "))
    return fields


@router.post("/batch", response=BatchOut, auth=scoped("orders:place"))
def place_order_batch(
    request: HttpRequest, payload: BatchIn, idempotency_key: str | None = IdempotencyKey
) -> HttpResponse:
    requests: list[placement.PlaceRequest | DomainError] = []
    for item in payload.orders:
        try:
            requests.append(_place_request(OrderIn.model_validate(item)))
        except ValidationError as error:
            requests.append(ValidationFailed("The order is invalid", fields=_item_errors(error)))
    outcome = placement.order_place_batch(
        member=_member(request),
        requests=requests,
        idempotency_key=idempotency_key,
        fingerprint=request_fingerprint(operation="POST /orders/batch", payload=payload.model_dump(mode="json")),
    )
    return _outcome(outcome)


@router.post("/batch/cancel", response=BatchOut, auth=scoped("orders:cancel"))
def cancel_order_batch(request: HttpRequest, payload: BatchCancelIn) -> dict[str, Any]:
    return {"results": changes.order_cancel_batch(member=_member(request), order_ids=payload.ids)}


@router.get("", response=Page[OrderOut], auth=scoped("orders:view"))
def list_orders(request: HttpRequest, query: Query[OrderListQuery]) -> Any:
    fields = parse_fields(query.fields, OrderOut.model_fields)
    filters = selectors.OrderFilters(
        **query.model_dump(exclude={"limit", "cursor", "fields"}),
    )
    orders = selectors.order_list(**viewer_kwargs(request), filters=filters)
    rows, next_cursor = paginate(orders, limit=query.limit, cursor=query.cursor)
    items = [order_to_dict(row) for row in rows]
    if fields:
        # A sparse fieldset is not an OrderOut any more: send it as it is.
        return _json(200, {"items": select_fields(items, fields), "next": next_cursor})
    return {"items": items, "next": next_cursor}


@router.get("/{order_id}", response=OrderOut, auth=scoped("orders:view"))
def get_order(request: HttpRequest, order_id: UUID, response: HttpResponse) -> dict[str, Any]:
    order = selectors.order_get(**viewer_kwargs(request), order_id=order_id)
    response["ETag"] = f'"{order.version}"'
    legs = selectors.order_legs(order=order) if order.parent_id is None and order.order_class != "SIMPLE" else None
    return order_to_dict(order, legs=legs)


@router.patch("/{order_id}", response=OrderOut, auth=scoped("orders:modify"))
def modify_order(
    request: HttpRequest,
    order_id: UUID,
    payload: OrderPatch,
    response: HttpResponse,
    if_match: str | None = Header(default=None, alias="If-Match"),
) -> dict[str, Any]:
    if not if_match:
        raise PreconditionRequired(
            "Modifying an order needs If-Match with the version you have seen",
            hint='Send the ETag of GET /orders/{id}, e.g. If-Match: "3"',
        )
    match = IF_MATCH.match(if_match)
    if match is None:
        raise ValidationFailed("Malformed If-Match", fields={"If-Match": ['must be an ETag such as "3"']})
    order = changes.order_modify(
        member=_member(request),
        order_id=order_id,
        expected_version=int(match.group(1)),
        modification=changes.Modification(values={name: getattr(payload, name) for name in payload.model_fields_set}),
    )
    response["ETag"] = f'"{order.version}"'
    return order_to_dict(order)


@router.post("/{order_id}/cancel", response={202: OrderOut}, auth=scoped("orders:cancel"))
def cancel_order(request: HttpRequest, order_id: UUID) -> Status:
    return Status(202, order_to_dict(changes.order_cancel(member=_member(request), order_id=order_id)))


@router.get("/{order_id}/events", response=Page[OrderEventOut], auth=scoped("orders:view"))
def list_order_events(request: HttpRequest, order_id: UUID) -> dict[str, Any]:
    # An order's lifecycle is short: all of it in one page, oldest first.
    order = selectors.order_get(**viewer_kwargs(request), order_id=order_id)
    return {"items": [event_to_dict(event) for event in selectors.order_event_list(order=order)], "next": None}


@router.get("/{order_id}/executions", response=Page[ExecutionOut], auth=scoped("orders:view"))
def list_order_executions(request: HttpRequest, order_id: UUID, query: Query[PageQuery]) -> dict[str, Any]:
    order = selectors.order_get(**viewer_kwargs(request), order_id=order_id)
    executions = selectors.execution_list(**viewer_kwargs(request), order=order)
    rows, next_cursor = paginate(executions, limit=query.limit, cursor=query.cursor, time_field="executed_at")
    return {"items": [execution_to_dict(row) for row in rows], "next": next_cursor}


@executions_router.get("", response=Page[ExecutionOut], auth=scoped("orders:view"))
def list_executions(request: HttpRequest, query: Query[PageQuery]) -> dict[str, Any]:
    executions = selectors.execution_list(**viewer_kwargs(request))
    rows, next_cursor = paginate(executions, limit=query.limit, cursor=query.cursor, time_field="executed_at")
    return {"items": [execution_to_dict(row) for row in rows], "next": next_cursor}
