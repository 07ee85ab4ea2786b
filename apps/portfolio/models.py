"""Positions per account and instrument, and the daily P&L snapshots."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db import models

from apps.brokers.models import BrokerAccount, Instrument
from apps.tenants.models import Tenant

QUANTITY = {"max_digits": 24, "decimal_places": 8}
COST = {"max_digits": 30, "decimal_places": 12}
MONEY = {"max_digits": 28, "decimal_places": 8}


class Position(models.Model):
    """The signed position of one account in one instrument, built from our executions only.

    Average cost includes the commissions of the opening executions; `realized_pnl` is the
    running total (commissions of reductions charged to it), `realized_today` the part realised on
    `realized_day` (a UTC date). Written only by `apps.portfolio.services.position_apply_execution`,
    inside the transaction that records the execution. A flat position keeps its row (and its
    realised P&L).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="positions")
    account = models.ForeignKey(BrokerAccount, on_delete=models.CASCADE, related_name="positions")
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="positions")
    symbol = models.CharField(max_length=32)
    currency = models.CharField(max_length=3)
    quantity = models.DecimalField(**QUANTITY, default=Decimal(0))
    avg_cost = models.DecimalField(**COST, default=Decimal(0))
    realized_pnl = models.DecimalField(**MONEY, default=Decimal(0))
    realized_today = models.DecimalField(**MONEY, default=Decimal(0))
    realized_day = models.DateField(null=True, blank=True)
    commissions = models.DecimalField(**MONEY, default=Decimal(0))
    executions = models.PositiveIntegerField(default=0)
    version = models.PositiveIntegerField(default=0)
    last_execution_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "account", "instrument"], name="position_account_instrument_unique"
            )
        ]
        indexes = [
            models.Index(fields=["tenant", "-updated_at", "-id"], name="position_tenant_updated"),
            models.Index(fields=["tenant", "symbol"], name="position_tenant_symbol"),
        ]

    def __str__(self) -> str:
        return f"{self.account_id} {self.symbol} {self.quantity} @ {self.avg_cost}"


class PnlSnapshot(models.Model):
    """One account's P&L of one UTC day in one currency, taken by the daily snapshot task.

    `realized_pnl` is what was realised that day, `unrealized_pnl` the mark of the open positions
    at snapshot time (positions without a last price are counted in `unpriced_positions` and left
    out), `realized_total` the account's running realised P&L. Taking the snapshot again the same
    day updates the row (unique per account, day and currency).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey(BrokerAccount, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    currency = models.CharField(max_length=3)
    realized_pnl = models.DecimalField(**MONEY)
    unrealized_pnl = models.DecimalField(**MONEY)
    realized_total = models.DecimalField(**MONEY)
    open_positions = models.PositiveIntegerField()
    unpriced_positions = models.PositiveIntegerField()
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "day", "currency"], name="pnlsnapshot_account_day_unique")
        ]
        indexes = [models.Index(fields=["tenant", "day"], name="pnlsnapshot_tenant_day")]

    def __str__(self) -> str:
        return f"{self.account_id} {self.day} {self.currency}"
