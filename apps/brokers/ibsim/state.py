"""What the simulated IB keeps while clients come and go: accounts, orders, executions, positions.

At IB, orders live at the broker, not in the API session, so none of this belongs to a socket.
Each client id's last order id is kept too: IB refuses (error 103) an order id that is not above
every id the client used before, across sessions and gateway restarts.

`BrokerState` can be written to and read from a JSON file so that a simulator restart keeps its
books (the ``--state`` option). Decimals are stored as strings and datetimes as ISO 8601.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

ZERO = Decimal(0)
T = TypeVar("T")

# Order statuses as TWS reports them.
PENDING_SUBMIT = "PendingSubmit"
PRE_SUBMITTED = "PreSubmitted"
SUBMITTED = "Submitted"
FILLED = "Filled"
CANCELLED = "Cancelled"
INACTIVE = "Inactive"
DONE_STATUSES = frozenset({FILLED, CANCELLED, INACTIVE})


@dataclass
class SimOrder:
    """One order as IB holds it. `perm_id` is its global identity; `order_id` is per client id."""

    perm_id: int
    client_id: int
    order_id: int
    account: str
    con_id: int
    action: str
    quantity: Decimal
    order_type: str
    limit_price: Decimal | None
    aux_price: Decimal | None
    tif: str
    created_at: datetime
    oca_group: str = ""
    oca_type: int = 0
    order_ref: str = ""
    parent_id: int = 0
    parent_perm_id: int = 0
    transmit: bool = True
    outside_rth: bool = False
    good_till_date: str = ""
    good_after_time: str = ""
    trailing_percent: Decimal | None = None
    trail_stop_price: Decimal | None = None
    exchange: str = "SMART"
    status: str = PENDING_SUBMIT
    filled: Decimal = ZERO
    notional: Decimal = ZERO
    last_fill_price: Decimal = ZERO
    commission: Decimal = ZERO
    why_held: str = ""
    completed_at: datetime | None = None
    completed_status: str = ""

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled if self.status not in DONE_STATUSES else ZERO

    @property
    def average_price(self) -> Decimal:
        return self.notional / self.filled if self.filled else ZERO

    @property
    def is_done(self) -> bool:
        return self.status in DONE_STATUSES

    @property
    def key(self) -> str:
        """The key of this order in the matching engine's book."""
        return str(self.perm_id)


@dataclass
class SimExecution:
    """One fill, with its commission. `exec_id` follows IB's dotted-hex format."""

    exec_id: str
    perm_id: int
    order_id: int
    client_id: int
    account: str
    con_id: int
    side: str
    shares: Decimal
    price: Decimal
    time: datetime
    cum_qty: Decimal
    avg_price: Decimal
    order_ref: str
    liquidity: int
    exchange: str
    commission: Decimal
    realized_pnl: Decimal | None


@dataclass
class SimPosition:
    """A position with IB's average cost (commissions included) and realised P&L."""

    account: str
    con_id: int
    quantity: Decimal = ZERO
    average_cost: Decimal = ZERO
    realized_pnl: Decimal = ZERO

    def apply(self, side: str, quantity: Decimal, price: Decimal, commission: Decimal) -> Decimal | None:
        """Book a fill; return the realised P&L it closed, or None if it only opened or added.

        IB folds commissions into the average cost of an opening trade and deducts them from
        the realised P&L of a closing one; a fill that crosses zero is split pro rata.
        """
        signed = quantity if side == "BUY" else -quantity
        realized: Decimal | None = None
        closing = ZERO
        if self.quantity and (self.quantity > 0) != (signed > 0):
            closing = min(abs(signed), abs(self.quantity))
        opening = abs(signed) - closing
        if closing:
            share = commission * closing / quantity
            direction = 1 if self.quantity > 0 else -1
            realized = (price - self.average_cost) * closing * direction - share
            self.realized_pnl += realized
            self.quantity += closing if signed > 0 else -closing
            if not self.quantity:
                self.average_cost = ZERO
        if opening:
            share = commission * opening / quantity
            held = abs(self.quantity)
            # A buy's commission raises its cost; a short sale's lowers its proceeds.
            cost = price * opening + (share if signed > 0 else -share)
            self.average_cost = (self.average_cost * held + cost) / (held + opening)
            self.quantity += opening if signed > 0 else -opening
        return realized


@dataclass
class SimAccount:
    """Cash and settings of one account."""

    code: str
    cash: Decimal = Decimal(1_000_000)
    currency: str = "USD"
    leverage: Decimal = Decimal(4)
    buying_power_override: Decimal | None = None


@dataclass
class BrokerState:
    """Everything that outlives sockets (and, with a state file, the simulator process)."""

    accounts: dict[str, SimAccount] = field(default_factory=dict)
    orders: dict[int, SimOrder] = field(default_factory=dict)
    executions: list[SimExecution] = field(default_factory=list)
    positions: dict[tuple[str, int], SimPosition] = field(default_factory=dict)
    last_order_ids: dict[int, int] = field(default_factory=dict)
    next_perm_id: int = 1_000_001
    next_exec_seq: int = 1
    by_client: dict[tuple[int, int], int] = field(default_factory=dict, repr=False)
    children: dict[int, list[int]] = field(default_factory=dict, repr=False)
    oca_groups: dict[tuple[str, str], list[int]] = field(default_factory=dict, repr=False)

    def add_order(self, order: SimOrder) -> None:
        """Store an order and index it (by client order id, parent and OCA group)."""
        known = order.perm_id in self.orders
        self.orders[order.perm_id] = order
        self.by_client[order.client_id, order.order_id] = order.perm_id
        if known:
            return
        if order.parent_perm_id:
            self.children.setdefault(order.parent_perm_id, []).append(order.perm_id)
        if order.oca_group:
            self.oca_groups.setdefault((order.account, order.oca_group), []).append(order.perm_id)

    def order_for(self, client_id: int, order_id: int) -> SimOrder | None:
        perm_id = self.by_client.get((client_id, order_id))
        return self.orders.get(perm_id) if perm_id is not None else None

    def new_perm_id(self) -> int:
        perm_id = self.next_perm_id
        self.next_perm_id += 1
        return perm_id

    def position(self, account: str, con_id: int) -> SimPosition:
        key = (account, con_id)
        position = self.positions.get(key)
        if position is None:
            position = self.positions[key] = SimPosition(account=account, con_id=con_id)
        return position

    # -- persistence -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "accounts": [_dump(a) for a in self.accounts.values()],
            "orders": [_dump(o) for o in self.orders.values()],
            "executions": [_dump(e) for e in self.executions],
            "positions": [_dump(p) for p in self.positions.values()],
            "last_order_ids": {str(k): v for k, v in self.last_order_ids.items()},
            "next_perm_id": self.next_perm_id,
            "next_exec_seq": self.next_exec_seq,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BrokerState:
        state = cls(
            last_order_ids={int(k): int(v) for k, v in data.get("last_order_ids", {}).items()},
            next_perm_id=int(data.get("next_perm_id", 1_000_001)),
            next_exec_seq=int(data.get("next_exec_seq", 1)),
        )
        for raw in data.get("accounts", []):
            account = _load(SimAccount, raw)
            state.accounts[account.code] = account
        for raw in data.get("orders", []):
            state.add_order(_load(SimOrder, raw))
        state.executions = [_load(SimExecution, raw) for raw in data.get("executions", [])]
        for raw in data.get("positions", []):
            position = _load(SimPosition, raw)
            state.positions[position.account, position.con_id] = position
        return state

    def save(self, path: str | Path) -> None:
        """Write atomically (temp file + rename), so a crash never leaves half a file."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
        with os.fdopen(descriptor, "w") as handle:
            json.dump(self.to_json(), handle, indent=1, sort_keys=True)
        Path(temp).replace(target)

    @classmethod
    def load(cls, path: str | Path) -> BrokerState:
        return cls.from_json(json.loads(Path(path).read_text()))


def _dump(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in asdict(obj).items():
        if isinstance(value, Decimal):
            out[key] = str(value)
        elif isinstance(value, datetime):
            out[key] = value.isoformat()
        else:
            out[key] = value
    return out


def _load(kind: type[T], raw: dict[str, Any]) -> T:
    values: dict[str, Any] = {}
    for spec in fields(kind):  # type: ignore[arg-type]
        if spec.name not in raw:
            continue
        value = raw[spec.name]
        annotation = str(spec.type)
        if value is None:
            values[spec.name] = None
        elif "Decimal" in annotation:
            values[spec.name] = Decimal(value)
        elif "datetime" in annotation:
            values[spec.name] = datetime.fromisoformat(value)
        else:
            values[spec.name] = value
    return kind(**values)
