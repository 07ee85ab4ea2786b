"""Our orders to IB orders and back: types, time in force, good-till, outside RTH, brackets, OCA.

Pure: no Django and no ib_async. `to_ib` turns one order of an `oms.submit` / `oms.modify`
command into `IbOrderFields` (the values the gateway copies onto an ib_async `Order`), or raises
`Unmapped` with a reason a trader can act on, so that a combination IB would refuse (or, worse,
interpret differently) never reaches IB. `from_ib` is the way back, used to adopt orders found at
IB that we did not place. Decimals stay Decimals here; floats appear only when the gateway fills
in the ib_async objects, at the wire.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

ORDER_TYPES = {
    "MKT": "MKT",
    "LMT": "LMT",
    "STP": "STP",
    "STP_LMT": "STP LMT",
    "TRAIL": "TRAIL",
    "MOC": "MOC",
    "LOC": "LOC",
}
OUR_TYPES = {ib: ours for ours, ib in ORDER_TYPES.items()}
TIFS = frozenset({"DAY", "GTC", "IOC", "FOK", "GTD"})
ON_CLOSE = frozenset({"MOC", "LOC"})
# IB's OCA type 1: cancel the other orders of the group (with block) when one fills.
OCA_CANCEL_WITH_BLOCK = 1


class Unmapped(ValueError):
    """An order IB cannot take as asked; `reason` becomes the order's reject reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class OrderSpec:
    """One order of a command, parsed: what the OMS asks IB to work."""

    order_id: str
    client_order_id: str
    symbol: str
    con_id: int | None
    side: str
    quantity: Decimal
    order_type: str
    time_in_force: str
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_amount: Decimal | None = None
    trail_percent: Decimal | None = None
    good_till: datetime | None = None
    outside_rth: bool = False
    parent_id: str | None = None
    oca_group: str = ""
    tenant_id: str = ""
    order_index: int = 0


@dataclass(frozen=True, slots=True)
class IbOrderFields:
    """The fields of an ib_async `Order` we set (IB's names in snake case); prices as Decimal."""

    action: str
    total_quantity: Decimal
    order_type: str
    tif: str
    order_ref: str
    lmt_price: Decimal | None = None
    aux_price: Decimal | None = None
    trailing_percent: Decimal | None = None
    good_till_date: str = ""
    outside_rth: bool = False
    oca_group: str = ""
    oca_type: int = 0
    transmit: bool = True
    parent_index: int | None = None  # index in the command of the order this one hangs from


def _decimal(value: Any, name: str) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise Unmapped(f"{name} {value!r} is not a decimal") from exc


def _datetime(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise Unmapped(f"good_till {value!r} has no time zone")
    return parsed.astimezone(UTC)


def spec_from_command(item: Mapping[str, Any]) -> OrderSpec:
    """Parse one order of a command payload (see `apps.orders.services.routing.order_command`)."""
    quantity = _decimal(item.get("quantity"), "quantity")
    if quantity is None:
        raise Unmapped("quantity is missing")
    con_id = item.get("con_id")
    return OrderSpec(
        order_id=str(item["order_id"]),
        client_order_id=str(item.get("client_order_id") or ""),
        symbol=str(item.get("symbol") or ""),
        con_id=int(con_id) if con_id not in (None, "") else None,
        side=str(item.get("side") or ""),
        quantity=quantity,
        order_type=str(item.get("order_type") or ""),
        time_in_force=str(item.get("time_in_force") or ""),
        limit_price=_decimal(item.get("limit_price"), "limit_price"),
        stop_price=_decimal(item.get("stop_price"), "stop_price"),
        trail_amount=_decimal(item.get("trail_amount"), "trail_amount"),
        trail_percent=_decimal(item.get("trail_percent"), "trail_percent"),
        good_till=_datetime(item.get("good_till")),
        outside_rth=bool(item.get("outside_rth")),
        parent_id=str(item["parent_id"]) if item.get("parent_id") else None,
        oca_group=str(item.get("oca_group") or ""),
        tenant_id=str(item.get("tenant_id") or ""),
        order_index=int(item.get("order_index") or 0),
    )


def ib_time(moment: datetime) -> str:
    """IB's explicit-zone time format (`yyyymmdd hh:mm:ss UTC`); newer TWS refuses zone-less times."""
    return moment.astimezone(UTC).strftime("%Y%m%d %H:%M:%S UTC")


def _check(spec: OrderSpec) -> None:
    """Refuse what IB would refuse or misread; every message names the combination."""
    if spec.side not in ("BUY", "SELL"):
        raise Unmapped(f"side {spec.side!r} is not BUY or SELL")
    if spec.order_type not in ORDER_TYPES:
        raise Unmapped(f"order type {spec.order_type!r} has no IB equivalent")
    if spec.time_in_force not in TIFS:
        raise Unmapped(f"time in force {spec.time_in_force!r} has no IB equivalent")
    if spec.quantity <= 0:
        raise Unmapped(f"quantity {spec.quantity} must be positive")
    if spec.quantity != spec.quantity.to_integral_value():
        raise Unmapped(f"quantity {spec.quantity}: IB's API does not take fractional share quantities")
    if not spec.client_order_id or len(spec.client_order_id) > 64:
        raise Unmapped("client_order_id (IB's orderRef) must be 1 to 64 characters")
    kind, tif = spec.order_type, spec.time_in_force
    if (tif == "GTD") != (spec.good_till is not None):
        raise Unmapped("good_till is required with GTD and only with GTD")
    if kind in ON_CLOSE and tif != "DAY":
        raise Unmapped(f"{kind} orders run in the closing auction and can only be DAY orders at IB, not {tif}")
    if kind in ON_CLOSE and spec.outside_rth:
        raise Unmapped(f"{kind} orders run in the closing auction; outside_rth makes no sense for them")
    if kind == "MKT" and spec.outside_rth:
        raise Unmapped("IB does not work market orders outside regular trading hours; send a LMT order")
    needs_limit = kind in ("LMT", "STP_LMT", "LOC")
    needs_stop = kind in ("STP", "STP_LMT")
    if needs_limit != (spec.limit_price is not None):
        raise Unmapped(f"{kind} orders {'need' if needs_limit else 'take no'} limit_price")
    if needs_stop != (spec.stop_price is not None):
        raise Unmapped(f"{kind} orders {'need' if needs_stop else 'take no'} stop_price")
    trails = (spec.trail_amount is not None) + (spec.trail_percent is not None)
    if kind == "TRAIL" and trails != 1:
        raise Unmapped("TRAIL orders need exactly one of trail_amount and trail_percent")
    if kind != "TRAIL" and trails:
        raise Unmapped(f"{kind} orders take no trail_amount or trail_percent")
    for name in ("limit_price", "stop_price", "trail_amount", "trail_percent"):
        value = getattr(spec, name)
        if value is not None and value <= 0:
            raise Unmapped(f"{name} {value} must be positive")


def to_ib(spec: OrderSpec, *, account_code: str = "") -> IbOrderFields:
    """Map one order on its own (transmit and parent links are set by `plan_submission`)."""
    del account_code  # the account is set by the gateway, kept here for symmetry with from_ib
    _check(spec)
    kind = spec.order_type
    fields = IbOrderFields(
        action=spec.side,
        total_quantity=spec.quantity,
        order_type=ORDER_TYPES[kind],
        tif=spec.time_in_force,
        order_ref=spec.client_order_id,
        outside_rth=spec.outside_rth,
        good_till_date=ib_time(spec.good_till) if spec.good_till is not None else "",
    )
    if kind in ("LMT", "STP_LMT", "LOC"):
        fields = replace(fields, lmt_price=spec.limit_price)
    if kind in ("STP", "STP_LMT"):
        fields = replace(fields, aux_price=spec.stop_price)
    if kind == "TRAIL":
        # IB: a trailing amount travels in auxPrice, a trailing percentage in trailingPercent.
        if spec.trail_amount is not None:
            fields = replace(fields, aux_price=spec.trail_amount)
        else:
            fields = replace(fields, trailing_percent=spec.trail_percent)
    return fields


def plan_submission(specs: Sequence[OrderSpec]) -> list[IbOrderFields]:
    """Map the orders of one `oms.submit` (a simple order, or a parent and its legs).

    Legs that share the parent's OCA group are an OCO pair: independent orders, each transmitted.
    Other legs hang from the parent (a bracket, or one-triggers-other): IB holds them until the
    parent fills, so the parent and every leg but the last go with transmit=False and the last leg
    transmits the whole group at once. Bracket exits share an OCA group so one exit cancels the other.
    """
    if not specs:
        raise Unmapped("the command holds no order")
    by_id = {spec.order_id: index for index, spec in enumerate(specs)}
    mapped = [to_ib(spec) for spec in specs]
    parent = specs[0]
    for index, spec in enumerate(specs[1:], start=1):
        if spec.parent_id is None:
            raise Unmapped(f"leg {spec.client_order_id} of a multi-order command has no parent")
        if by_id.get(spec.parent_id) != 0:
            raise Unmapped(f"leg {spec.client_order_id} hangs from an order outside this command")
        if spec.symbol != parent.symbol or spec.con_id != parent.con_id:
            raise Unmapped(f"leg {spec.client_order_id} trades another instrument than its parent")
        oco = bool(spec.oca_group) and spec.oca_group == parent.oca_group
        mapped[index] = replace(
            mapped[index],
            parent_index=None if oco else 0,
            oca_group=spec.oca_group,
            oca_type=OCA_CANCEL_WITH_BLOCK if spec.oca_group else 0,
        )
    if parent.parent_id is not None and len(specs) > 1:
        raise Unmapped("the first order of a multi-order command must be the parent")
    if parent.oca_group:
        mapped[0] = replace(mapped[0], oca_group=parent.oca_group, oca_type=OCA_CANCEL_WITH_BLOCK)
    children = [index for index, fields in enumerate(mapped) if fields.parent_index == 0]
    if children:
        mapped[0] = replace(mapped[0], transmit=False)
        for index in children[:-1]:
            mapped[index] = replace(mapped[index], transmit=False)
    return mapped


@dataclass(frozen=True, slots=True)
class OurFields:
    """An IB order read back in our vocabulary (for adopting orders we did not place)."""

    side: str
    quantity: Decimal
    order_type: str
    time_in_force: str
    limit_price: Decimal | None
    stop_price: Decimal | None
    trail_amount: Decimal | None
    trail_percent: Decimal | None
    outside_rth: bool
    client_order_id: str


def from_ib(fields: IbOrderFields) -> OurFields:
    """The way back; raise Unmapped for IB types and TIFs the OMS has no word for."""
    ours = OUR_TYPES.get(fields.order_type)
    if ours is None:
        raise Unmapped(f"IB order type {fields.order_type!r} has no OMS equivalent")
    if fields.tif not in TIFS:
        raise Unmapped(f"IB time in force {fields.tif!r} has no OMS equivalent")
    trail_amount = fields.aux_price if ours == "TRAIL" and fields.trailing_percent is None else None
    return OurFields(
        side=fields.action,
        quantity=fields.total_quantity,
        order_type=ours,
        time_in_force=fields.tif,
        limit_price=fields.lmt_price if ours in ("LMT", "STP_LMT", "LOC") else None,
        stop_price=fields.aux_price if ours in ("STP", "STP_LMT") else None,
        trail_amount=trail_amount,
        trail_percent=fields.trailing_percent if ours == "TRAIL" else None,
        outside_rth=fields.outside_rth,
        client_order_id=fields.order_ref,
    )


# IB order statuses (as TWS reports them) in our terms. Inactive is not final: TWS uses it for
# orders it holds (outside hours, pending a locate) that may still work, so it is reconciled.
WORKING_STATUSES = frozenset({"PendingSubmit", "ApiPending", "PreSubmitted", "Submitted", "PendingCancel"})
CANCELLED_STATUSES = frozenset({"Cancelled", "ApiCancelled"})
FILLED_STATUS = "Filled"
INACTIVE_STATUS = "Inactive"


def is_working(status: str) -> bool:
    return status in WORKING_STATUSES
