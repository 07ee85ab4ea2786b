"""Command line and the blocking entry point that ``manage.py ibsim`` wraps.

python -m apps.brokers.ibsim --port 4002 --accounts DU1000001,DU1000002 --seed 42 --speed 1 --state FILE
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Sequence
from decimal import Decimal

from apps.brokers.ibsim.simulator import IBSimulator, SimConfig


def run(
    host: str,
    port: int,
    accounts: list[str],
    seed: int,
    speed: float,
    state_file: str | None,
    control_port: int | None,
    **options: object,
) -> None:
    """Run the simulator in the foreground until interrupted (Ctrl-C / SIGTERM)."""
    config = SimConfig(
        host=host,
        port=port,
        accounts=tuple(accounts),
        seed=seed,
        speed=speed,
        state_file=state_file,
        control_port=control_port,
    )
    simulator = IBSimulator(config, **options)
    with contextlib.suppress(KeyboardInterrupt):
        simulator.serve_forever()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ibsim", description="IB Gateway simulator (TWS API, server version 178)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=4002, help="API port (IB Gateway paper default 4002)")
    parser.add_argument("--accounts", default="DU1000001", help="comma-separated account codes")
    parser.add_argument("--seed", type=int, default=42, help="seed of the random-walk prices")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second (0 freezes)")
    parser.add_argument("--state", default=None, help="JSON file to keep the books in across restarts")
    parser.add_argument("--control-port", type=int, default=None, help="port of the HTTP control surface")
    parser.add_argument("--schedule", default="always", help="'always' (default) or an exchange calendar (XNYS)")
    parser.add_argument("--prices", default=None, help="CSV of ticks to replay: time,symbol,bid,ask,last[,sizes]")
    parser.add_argument("--liquidity", type=Decimal, default=Decimal(10_000), help="displayed size of each quote")
    parser.add_argument("--no-rate-limit", action="store_true", help="do not enforce 50 messages/second")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.uvloop:
        import uvloop

        uvloop.install()
    run(
        host=args.host,
        port=args.port,
        accounts=[a.strip() for a in args.accounts.split(",") if a.strip()],
        seed=args.seed,
        speed=args.speed,
        state_file=args.state,
        control_port=args.control_port,
        schedule=args.schedule,
        prices_csv=args.prices,
        liquidity=args.liquidity,
        rate_limit=not args.no_rate_limit,
    )
