"""`manage.py run_gateway --account DU1000001 [--market-data AAPL,MSFT]`: the IB gateway process.

The only process that talks to IB. It serves one IB broker account over the IB login its broker
account row names (host, port, client id), or several (`--account DU1,DU2`: the accounts of one
multi-account / advisor login, which must name the same host, port and client id) over that one
connection; it holds a lock on that login and client id for its whole life (a second process for
them refuses to start), and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.brokers.ib.context import GatewayConfig
from apps.brokers.ib.gateway import Gateway
from apps.brokers.ib.store import GatewayLock, GatewayLocked
from apps.brokers.models import Broker, BrokerAccount, Instrument


def gateway_config(account: BrokerAccount, *, market_data: tuple[tuple[str, int], ...] = ()) -> GatewayConfig:
    """The gateway settings of an IB account, with the knobs from the settings module."""
    if not account.host or account.port is None or account.client_id is None:
        raise CommandError(f"IB account {account.account_code} has no connection (host, port, client id)")
    return GatewayConfig(
        account_id=account.id,
        tenant_id=account.tenant_id,
        account_code=account.account_code,
        host=account.host,
        port=account.port,
        client_id=account.client_id,
        heartbeat_seconds=settings.IB_GATEWAY_HEARTBEAT_SECONDS,
        heartbeat_timeout=settings.IB_GATEWAY_HEARTBEAT_TIMEOUT_SECONDS,
        reconcile_seconds=settings.IB_GATEWAY_RECONCILE_SECONDS,
        pacing_rate=settings.IB_GATEWAY_PACING_RATE,
        pacing_burst=settings.IB_GATEWAY_PACING_BURST,
        backoff_cap=settings.IB_GATEWAY_BACKOFF_CAP_SECONDS,
        breaker_threshold=settings.IB_GATEWAY_BREAKER_THRESHOLD,
        breaker_open_seconds=settings.IB_GATEWAY_BREAKER_OPEN_SECONDS,
        events_maxlen=settings.EVENTS_STREAM_MAXLEN,
        market_data=market_data,
    )


class Command(BaseCommand):
    help = "Run the IB gateway for one broker account (the only component that talks to IB)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--account", required=True, help="IB account code(s), e.g. DU1000001 or DU1000001,DU1000002 (one login)"
        )
        parser.add_argument("--market-data", default="", help="symbols to stream quotes for, comma separated")

    def handle(self, *args: Any, **options: Any) -> None:
        codes = [c.strip() for c in options["account"].split(",") if c.strip()]
        accounts = []
        for code in codes:
            found = list(BrokerAccount.objects.filter(broker=Broker.IB, account_code=code))
            if len(found) != 1:
                raise CommandError(f"expected one IB broker account {code}, found {len(found)}")
            accounts += found
        if not accounts:
            raise CommandError("--account names no IB account")
        logins = {(a.host, a.port, a.client_id) for a in accounts}
        if len(logins) != 1:
            raise CommandError(f"accounts {', '.join(codes)} are on different IB logins; run one gateway per login")
        code = ",".join(codes)
        symbols = [s.strip().upper() for s in options["market_data"].split(",") if s.strip()]
        instruments = Instrument.objects.filter(symbol__in=symbols, con_id__isnull=False)
        market_data = tuple((i.symbol, int(i.con_id)) for i in instruments if i.con_id is not None)
        config = gateway_config(accounts[0], market_data=market_data)
        lock = GatewayLock(config.login, config.client_id)
        try:
            lock.acquire()
        except GatewayLocked as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"ib gateway for {code} on {config.login} client id {config.client_id}")
        others = tuple(gateway_config(account) for account in accounts[1:])
        try:
            asyncio.run(self._serve(config, others))
        finally:
            lock.release()

    async def _serve(self, config: GatewayConfig, others: tuple[GatewayConfig, ...] = ()) -> None:
        gateway = Gateway(config, others=others)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, gateway.stop)
        await gateway.run()
