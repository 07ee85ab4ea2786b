"""Benchmark of the IB Gateway simulator driven by the real ib_async client over TCP.

Starts the simulator in its own process (so that the client and the server do not share a GIL),
with the message-rate limit off and the clock frozen, then measures market orders of 1 share:

* **protocol path, one client** (the figure held against the target): ib_async's own request
  encoder (`ib.client.placeOrder`) and its own socket reader and decoder (`Client` → `Decoder`,
  which build `Contract`/`Order`/`OrderState`/`Execution` objects for every message), with the
  wrapper's per-order handlers (openOrder, orderStatus, execDetails, commissionReport) replaced by
  counters. This is what the simulator serves; it leaves out ib_async's `IB` bookkeeping.
* **full IB API, one client** (for reference): `IB.placeOrder` and `Trade` objects. Here ib_async
  itself is the limit: it formats f-string log lines with full `Trade` reprs for every order,
  status and fill whatever the log level, and builds a `Trade` with its events per order
  (py-spy: ~25% of the client's CPU in dataclass `__repr__`s, ~10% in `Trade` construction).
* **full IB API, N client processes** in parallel (distinct client ids), aggregate orders/s.
* **simulator capacity**: pre-encoded placeOrder frames from a plain socket (no client cost).
* **latency**: one order at a time through the full IB API, placeOrder → `Filled`, p50 / p99.

    .venv/bin/python bench/ibsim.py [--orders 5000] [--latency-orders 2000] [--clients 2]

Targets: at least 2,000 orders/s and p99 under 5 ms. The clients share the machine's cores with
the simulator, so every figure is a lower bound of what the simulator can serve.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

from _shared import free_port, machine
from ib_async import IB, MarketOrder, Stock
from ib_async.client import Client

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATE = 2_000
TARGET_P99_MS = 5.0


def start_server(port: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "apps.brokers.ibsim",
        "--port",
        str(port),
        "--speed",
        "0",
        "--no-rate-limit",
        "--liquidity",
        "1000000000",
        "--uvloop",
        "--log-level",
        "WARNING",
    ]
    process = subprocess.Popen(command, cwd=ROOT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("simulator did not start")


async def throughput(ib: IB, contract: Stock, count: int) -> float:
    """Full IB API: `IB.placeOrder`, a `Trade` per order, `filledEvent`s."""
    done = asyncio.Event()
    filled = 0

    def on_fill(trade: object) -> None:
        nonlocal filled
        filled += 1
        if filled == count:
            done.set()

    started = time.perf_counter()
    for index in range(count):
        # Buys and sells alternate: the position stays flat, within the account's buying power.
        trade = ib.placeOrder(contract, MarketOrder("SELL" if index % 2 else "BUY", 1))
        trade.filledEvent += on_fill
        if index % 200 == 0:
            await asyncio.sleep(0)  # let replies be read while sending
    await asyncio.wait_for(done.wait(), 120)
    return count / (time.perf_counter() - started)


class FillCounter:
    """Stands in for the `Wrapper`'s per-order handlers while installed; every other message keeps its handler.

    ib_async's decoder still parses each message into its objects and calls these by name.
    """

    def __init__(self, ib: IB) -> None:
        self.ib = ib
        self.filled = 0
        self.executions = 0
        self.commissions = 0
        self.target = 0
        self.done = asyncio.Event()

    def openOrder(self, orderId: int, contract: object, order: object, orderState: object) -> None:
        self.ib.client.updateReqId(orderId + 1)

    def orderStatus(self, orderId: int, status: str, *args: object) -> None:
        if status == "Filled":
            self.filled += 1
            if self.filled >= self.target:
                self.done.set()

    def execDetails(self, reqId: int, contract: object, execution: object) -> None:
        self.executions += 1

    def commissionReport(self, commissionReport: object) -> None:
        self.commissions += 1

    HANDLERS = ("openOrder", "orderStatus", "execDetails", "commissionReport")

    def install(self) -> None:
        for name in self.HANDLERS:
            setattr(self.ib.wrapper, name, getattr(self, name))

    def remove(self) -> None:
        for name in self.HANDLERS:
            delattr(self.ib.wrapper, name)


async def protocol_throughput(ib: IB, contract: Stock, count: int) -> float:
    """ib_async's encoder and decoder over the socket; the wrapper's per-order handlers only count."""
    counter = FillCounter(ib)
    counter.target = count
    orders = (MarketOrder("BUY", 1), MarketOrder("SELL", 1))
    counter.install()
    try:
        started = time.perf_counter()
        for index in range(count):
            ib.client.placeOrder(ib.client.getReqId(), contract, orders[index % 2])
            if index % 200 == 0:
                await asyncio.sleep(0)  # let replies be read while sending
        await asyncio.wait_for(counter.done.wait(), 120)
        elapsed = time.perf_counter() - started
        # Every order's execution and commission report arrived and were decoded too.
        deadline = time.monotonic() + 10
        while counter.commissions < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if (counter.executions, counter.commissions) != (count, count):
            raise RuntimeError(f"{counter.executions} executions, {counter.commissions} commissions for {count} orders")
    finally:
        counter.remove()
    return count / elapsed


async def latency(ib: IB, contract: Stock, count: int) -> list[float]:
    samples: list[float] = []
    for index in range(count):
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        trade = ib.placeOrder(contract, MarketOrder("SELL" if index % 2 else "BUY", 1))
        trade.filledEvent += lambda _t, f=future: f.done() or f.set_result(None)
        await asyncio.wait_for(future, 5)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def connect(port: int, client_id: int) -> tuple[IB, Stock]:
    ib = IB()
    ib.client.MaxRequests = 0  # the simulator's rate limit is off; so is the client's throttle
    await ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=30)
    contract = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(contract)
    return ib, contract


async def run(port: int, orders: int, latency_orders: int) -> tuple[float, float, list[float]]:
    ib, contract = await connect(port, 1)
    await latency(ib, contract, 200)  # warm up
    protocol_rate = await protocol_throughput(ib, contract, orders)
    full_rate = await throughput(ib, contract, orders)
    samples = await latency(ib, contract, latency_orders)
    ib.disconnect()
    return protocol_rate, full_rate, samples


def _parallel_client(port: int, client_id: int, count: int, start_at: float) -> tuple[float, float]:
    """One process of the parallel run: connect, wait for the common start, place `count` orders."""

    async def go() -> tuple[float, float]:
        ib, contract = await connect(port, client_id)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        started = time.time()
        await throughput(ib, contract, count)
        finished = time.time()
        ib.disconnect()
        return started, finished

    return asyncio.run(go())


def parallel(clients: int, orders: int) -> float:
    """Aggregate orders/s of `clients` full-API ib_async clients in their own processes.

    On a simulator of its own: a connecting ib_async client asks for every execution and completed
    order of the day, so a simulator that has already filled thousands would slow the start.
    """
    per_client = max(1, orders // clients)
    port = free_port()
    server = start_server(port)
    start_at = time.time() + 8.0  # every process has started and connected by then
    try:
        with multiprocessing.get_context("spawn").Pool(clients) as pool:
            spans = pool.starmap(_parallel_client, [(port, 100 + i, per_client, start_at) for i in range(clients)])
    finally:
        server.terminate()
        server.wait(10)
    started = min(span[0] for span in spans)
    finished = max(span[1] for span in spans)
    return per_client * clients / (finished - started)


def raw_capacity(port: int, count: int) -> float:
    """Orders/s the simulator itself accepts and fills, fed pre-encoded frames from a plain socket.

    ib_async spends ~0.7 ms of its own CPU per order (it formats every Trade into its log lines
    whatever the log level), so one ib_async client cannot show what the simulator can take.
    """
    sent: list[str] = []
    encoder = Client(wrapper=object())
    encoder._serverVersion = 178
    encoder.connState = Client.CONNECTED
    encoder.sendMsg = sent.append  # type: ignore[method-assign]
    contract = Stock("AAPL", "SMART", "USD", conId=265598)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"API\0" + struct.pack(">I", 9) + b"v157..178")
        sock.sendall(frame("71\x002\x0077\x00\x00"))
        buffer = b""
        first_id = 0
        while not first_id:
            buffer += sock.recv(65536)
            for fields in _frames(buffer):
                if fields[0] == "9":
                    first_id = int(fields[2])
        for index in range(count):
            encoder.placeOrder(first_id + index, contract, MarketOrder("SELL" if index % 2 else "BUY", 1))
        payload = b"".join(frame(text) for text in sent)
        started = time.perf_counter()
        sock.sendall(payload)
        filled = 0
        buffer = b""
        while filled < count:
            buffer += sock.recv(1 << 20)
            complete, buffer = _split(buffer)
            filled += sum(1 for f in complete if f[0] == "3" and f[2] == "Filled")
        return count / (time.perf_counter() - started)


def frame(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">I", len(data)) + data


def _split(buffer: bytes) -> tuple[list[list[str]], bytes]:
    out = []
    while len(buffer) >= 4:
        (length,) = struct.unpack(">I", buffer[:4])
        if len(buffer) < 4 + length:
            break
        out.append(buffer[4 : 4 + length].decode().split("\0"))
        buffer = buffer[4 + length :]
    return out, buffer


def _frames(buffer: bytes) -> list[list[str]]:
    return _split(buffer)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=5_000)
    parser.add_argument("--latency-orders", type=int, default=2_000)
    parser.add_argument("--clients", type=int, default=2, help="client processes of the parallel run (0: skip it)")
    args = parser.parse_args()
    port = free_port()
    server = start_server(port)
    try:
        protocol_rate, full_rate, samples = asyncio.run(run(port, args.orders, args.latency_orders))
        capacity = raw_capacity(port, args.orders)
    finally:
        server.terminate()
        server.wait(10)
    parallel_rate = parallel(args.clients, args.orders) if args.clients > 0 else None
    quantiles = statistics.quantiles(samples, n=100)
    p50, p99 = statistics.median(samples), quantiles[98]

    def verdict(rate: float) -> str:
        return "ok" if rate >= TARGET_RATE else "BELOW TARGET"

    print(f"machine: {machine()}")
    print(f"ibsim (server version 178, rate limit off, own process), {args.orders} market orders of 1 share")
    print(
        f"  protocol path, one ib_async client  {protocol_rate:7.0f} orders/s   target >= {TARGET_RATE}   "
        f"{verdict(protocol_rate)}"
    )
    print("      (ib.client.placeOrder; ib_async's reader and decoder; per-order wrapper handlers only count)")
    print(
        f"  full IB API, one ib_async client    {full_rate:7.0f} orders/s   (IB.placeOrder, Trade objects; "
        "ib_async's own CPU is the limit)"
    )
    if parallel_rate is not None:
        print(
            f"  full IB API, {args.clients} client processes     {parallel_rate:7.0f} orders/s   target >= "
            f"{TARGET_RATE}   {verdict(parallel_rate)}"
        )
    print(f"  simulator capacity                  {capacity:7.0f} orders/s   (pre-encoded orders from a raw socket)")
    print(f"  placeOrder->Filled p50              {p50:7.3f} ms         (full IB API, one order at a time)")
    ok = "ok" if p99 < TARGET_P99_MS else "ABOVE TARGET"
    print(f"  placeOrder->Filled p99              {p99:7.3f} ms         target < {TARGET_P99_MS} ms   {ok}")


if __name__ == "__main__":
    main()
