"""A small HTTP control surface, for poking a running simulator by hand (curl) on another port.

    curl -s localhost:4003/state
    curl -s -XPOST localhost:4003/price -d '{"symbol": "AAPL", "last": 191.5}'
    curl -s -XPOST localhost:4003/backend/down -d '{"data_lost": true}'

Every POST takes a JSON object and calls the `IBSimulator` control method of the same name;
answers are JSON. Plain asyncio on the simulator's own loop, HTTP/1.0 style (one request per
connection), loopback by default: a tool for people, not an API to expose.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from apps.brokers.ibsim.simulator import IBSimulator

logger = logging.getLogger(__name__)
MAX_BODY = 64 * 1024


def _actions(sim: IBSimulator) -> dict[str, Callable[[dict[str, Any]], Any]]:
    return {
        "/price": lambda b: sim.set_price(
            b["symbol"], b.get("last"), bid=b.get("bid"), ask=b.get("ask"), size=b.get("size")
        ),
        "/fill": lambda b: sim.fill(int(b["perm_id"]), b.get("quantity"), b.get("price")),
        "/advance": lambda b: sim.advance(float(b["seconds"])),
        "/drop": lambda b: sim.drop_connections(),
        "/refuse": lambda b: sim.refuse_connections(float(b.get("seconds", 30))),
        "/backend/down": lambda b: sim.backend_down(bool(b.get("data_lost", False))),
        "/backend/up": lambda b: sim.backend_up(b.get("data_lost")),
        "/reject-next": lambda b: sim.reject_next(int(b.get("code", 201)), str(b.get("reason", "Order rejected"))),
        "/delay-acks": lambda b: sim.delay_acks(float(b.get("seconds", 0))),
        "/duplicates": lambda b: sim.duplicate_status(bool(b.get("on", True))),
        "/commission-first": lambda b: sim.commission_before_execution(bool(b.get("on", True))),
        "/commission-delay": lambda b: sim.delay_commissions(float(b.get("seconds", 0))),
        "/late-fills": lambda b: sim.late_fills(bool(b.get("on", True)), b.get("quantity")),
        "/rate-limit": lambda b: sim.rate_limit(bool(b.get("on", True)), int(b.get("per_second", 50))),
        "/auto-match": lambda b: sim.auto_match(bool(b.get("on", True))),
        "/buying-power": lambda b: sim.set_buying_power(str(b["account"]), b.get("amount")),
    }


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


class ControlServer:
    """HTTP/1.0 control endpoints for one simulator."""

    def __init__(self, simulator: IBSimulator) -> None:
        self.simulator = simulator
        self.actions = _actions(simulator)
        self._server: asyncio.Server | None = None
        self.port = 0

    async def listen(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("ibsim control surface on http://%s:%s", host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def state(self) -> dict[str, Any]:
        sim = self.simulator
        return {
            "time": sim.now().isoformat(),
            "port": sim.port,
            "orders": [asdict(o) for o in sim.orders()],
            "positions": [asdict(p) for p in sim.positions()],
            "executions": len(sim.executions()),
            "sessions": sorted(s.client_id for s in sim.server.sessions if s.client_id is not None),
            "faults": {k: v for k, v in asdict(sim.faults).items() if k != "rejections"},
        }

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readline()
            method, path, *_ = request.decode("latin-1").split()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = min(int(value), MAX_BODY)
            body = json.loads(await reader.readexactly(length) or b"{}") if length else {}
            if method == "GET" and path == "/state":
                status, payload = 200, self.state()
            elif method == "POST" and path in self.actions:
                result = self.actions[path](body)
                status, payload = 200, {"ok": True, "result": result}
            else:
                status, payload = 404, {"error": f"no {method} {path}", "endpoints": sorted(self.actions)}
        except (ValueError, KeyError, TypeError) as exc:
            status, payload = 400, {"error": str(exc)}
        data = json.dumps(payload, default=_json_default).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
        head = f"HTTP/1.0 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        writer.write(head.encode() + data)
        await writer.drain()
        writer.close()
