"""Benchmark of the IB Gateway simulator with one real ib_async client.

Starts the simulator in its own process (so that the client and the server do not share a GIL),
with the message-rate limit off and the clock frozen, then measures:

* throughput: N market orders sent back to back, orders accepted and filled per second;
* latency: one order at a time, placeOrder → Filled seen by the client, p50 and p99.

    .venv/bin/python bench/ibsim.py [--orders 5000] [--latency-orders 2000] [--in-process]

Targets: at least 2,000 orders/s and p99 under 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

from ib_async import IB, MarketOrder, Stock
from ib_async.client import Client

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATE = 2_000
TARGET_P99_MS = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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
    done = asyncio.Event()
    filled = 0

    def on_fill(trade: object) -> None:
        nonlocal filled
        filled += 1
        if filled == count:
            done.set()

    started = time.perf_counter()
    for _ in range(count):
        trade = ib.placeOrder(contract, MarketOrder("BUY", 1))
        trade.filledEvent += on_fill
        if _ % 200 == 0:
            await asyncio.sleep(0)  # let replies be read while sending
    await asyncio.wait_for(done.wait(), 120)
    return count / (time.perf_counter() - started)


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


async def run(port: int, orders: int, latency_orders: int) -> tuple[float, list[float]]:
    ib = IB()
    ib.client.MaxRequests = 0  # the simulator's rate limit is off; so is the client's throttle
    await ib.connectAsync("127.0.0.1", port, clientId=1, timeout=5)
    contract = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(contract)
    await latency(ib, contract, 200)  # warm up
    rate = await throughput(ib, contract, orders)
    samples = await latency(ib, contract, latency_orders)
    ib.disconnect()
    return rate, samples


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
            encoder.placeOrder(first_id + index, contract, MarketOrder("BUY", 1))
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
    args = parser.parse_args()
    port = free_port()
    server = start_server(port)
    try:
        rate, samples = asyncio.run(run(port, args.orders, args.latency_orders))
        capacity = raw_capacity(port, args.orders)
    finally:
        server.terminate()
        server.wait(10)
    quantiles = statistics.quantiles(samples, n=100)
    p50, p99 = statistics.median(samples), quantiles[98]
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}")
    print("ibsim (server version 178, rate limit off), one ib_async client, market orders of 1 share")
    ok = "ok" if rate >= TARGET_RATE else "BELOW TARGET"
    print(f"  throughput        {rate:10.0f} orders/s   target >= {TARGET_RATE} orders/s   {ok}")
    print(f"  simulator capacity {capacity:9.0f} orders/s   (pre-encoded orders from a raw socket, same server)")
    print(f"  placeOrder->Filled p50 {p50:7.3f} ms")
    ok = "ok" if p99 < TARGET_P99_MS else "ABOVE TARGET"
    print(f"  placeOrder->Filled p99 {p99:7.3f} ms    target < {TARGET_P99_MS} ms            {ok}")


if __name__ == "__main__":
    main()
