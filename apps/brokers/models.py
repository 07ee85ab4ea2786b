"""Broker accounts (with encrypted credentials and connection status) and the instrument universe."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models.functions import Upper

from apps.tenants.models import Tenant


class Broker(models.TextChoices):
    IB = "IB"
    PAPER = "PAPER"


class AccountMode(models.TextChoices):
    PAPER = "PAPER"
    LIVE = "LIVE"


class ConnectionStatus(models.TextChoices):
    CONNECTED = "CONNECTED"
    DISCONNECTED = "DISCONNECTED"
    RECONNECTING = "RECONNECTING"
    HALTED = "HALTED"


# The reason a gateway gives when it reports HALTED because its circuit breaker is open: such a
# halt holds or refuses orders like a disconnection; any other HALTED refuses them.
BREAKER_HALT = "circuit breaker open"


class WhenDisconnected(models.TextChoices):
    """What happens to a new order while the account's broker connection is down."""

    HOLD = "HOLD"  # accepted and kept NEW; routed once the gateway is back
    REFUSE = "REFUSE"  # refused with 503 UNAVAILABLE


class BrokerAccount(models.Model):
    """One account at a broker that a tenant trades through.

    Credentials are stored only encrypted (`apps.common.crypto`) and never leave the service
    layer in clear. `status` is what the gateway (or the paper broker) last reported;
    `connect_requested` is what operators asked for with connect / disconnect.
    Traders see and trade only the accounts granted to them (django-guardian permission
    `brokers.trade_brokeraccount`); admins and managers see all of their tenant's.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="broker_accounts")
    broker = models.CharField(max_length=8, choices=Broker.choices)
    account_code = models.CharField(max_length=32)
    mode = models.CharField(max_length=8, choices=AccountMode.choices)
    base_currency = models.CharField(max_length=3, default="USD")
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    client_id = models.PositiveIntegerField(null=True, blank=True)
    credentials_encrypted = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=ConnectionStatus.choices, default=ConnectionStatus.DISCONNECTED)
    status_reason = models.CharField(max_length=255, blank=True)
    connect_requested = models.BooleanField(default=False)
    # An operator's halt (`POST …/halt`): HALTED until resumed, whatever the gateway reports. A
    # HALTED status without it is the gateway's own (its circuit breaker is open).
    halted = models.BooleanField(default=False)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    orders_when_disconnected = models.CharField(
        max_length=8, choices=WhenDisconnected.choices, default=WhenDisconnected.HOLD
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "broker", "account_code"], name="brokeraccount_tenant_code_unique"
            )
        ]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="brokeraccount_tenant_created")]
        permissions = [("trade_brokeraccount", "Can place and manage orders on the broker account")]

    def __str__(self) -> str:
        return f"{self.broker}:{self.account_code}"


class Instrument(models.Model):
    """A tradable listing: reference data shared by every tenant (IB's contract master).

    `con_id` is IB's contract id; `tick_size` and `lot_size` drive order validation.
    """

    class AssetClass(models.TextChoices):
        STK = "STK"
        ETF = "ETF"
        FX = "FX"
        FUT = "FUT"
        OPT = "OPT"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    symbol = models.CharField(max_length=32)
    exchange = models.CharField(max_length=16)
    currency = models.CharField(max_length=3)
    asset_class = models.CharField(max_length=8, choices=AssetClass.choices)
    description = models.CharField(max_length=200, blank=True)
    tick_size = models.DecimalField(max_digits=20, decimal_places=10)
    lot_size = models.DecimalField(max_digits=20, decimal_places=10, default=1)
    multiplier = models.DecimalField(max_digits=20, decimal_places=10, default=1)
    con_id = models.BigIntegerField(null=True, blank=True, unique=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                Upper("symbol"), "exchange", "currency", name="instrument_symbol_exchange_currency_unique"
            ),
            models.CheckConstraint(condition=models.Q(tick_size__gt=0), name="instrument_tick_size_positive"),
            models.CheckConstraint(condition=models.Q(lot_size__gt=0), name="instrument_lot_size_positive"),
        ]
        indexes = [models.Index(fields=["symbol"], name="instrument_symbol")]

    def __str__(self) -> str:
        return f"{self.symbol} {self.exchange} {self.currency}"


# The IB connector's tables (order-id leases, tickets, execution journal, reconciliation runs).
from apps.brokers.ib.models import (  # noqa: E402
    ExecutionRecord,
    OrderIdLease,
    OrderTicket,
    ReconciliationDrift,
    ReconciliationRun,
)

__all__ = [
    "BREAKER_HALT",
    "AccountMode",
    "Broker",
    "BrokerAccount",
    "ConnectionStatus",
    "ExecutionRecord",
    "Instrument",
    "OrderIdLease",
    "OrderTicket",
    "ReconciliationDrift",
    "ReconciliationRun",
    "WhenDisconnected",
]
