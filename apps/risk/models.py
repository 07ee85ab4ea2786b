"""Risk tables: limits, overrides, kill switches, circuit breakers and each account's risk state."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db import models

from apps.brokers.models import BrokerAccount, Instrument
from apps.risk.derisk import DeriskState, TradingState
from apps.risk.gates import LimitKind, LimitScope
from apps.tenants.models import Tenant

AMOUNT = {"max_digits": 28, "decimal_places": 8}


def _choices(enum: type) -> list[tuple[str, str]]:
    return [(member.value, member.value) for member in enum]  # type: ignore[attr-defined]


class RiskLimit(models.Model):
    """One pre-trade limit of a tenant. `version` grows with every change; a denial names it.

    `scope_id` is empty for TENANT, an account id for ACCOUNT, an instrument id or upper-case
    symbol for INSTRUMENT and a strategy id for STRATEGY. `period_seconds` is set for ORDER_RATE
    (the text the client sent, such as "1m", is kept in `period`).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=24, choices=_choices(LimitKind))
    scope = models.CharField(max_length=12, choices=_choices(LimitScope))
    scope_id = models.CharField(max_length=64, blank=True)
    value = models.DecimalField(**AMOUNT)
    period = models.CharField(max_length=16, blank=True)
    period_seconds = models.PositiveIntegerField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "kind", "scope", "scope_id", "period_seconds"],
                name="risklimit_tenant_kind_scope_unique",
                nulls_distinct=False,
            ),
            models.CheckConstraint(condition=models.Q(value__gte=0), name="risklimit_value_not_negative"),
        ]
        indexes = [models.Index(fields=["tenant", "-created_at", "-id"], name="risklimit_tenant_created")]

    def __str__(self) -> str:
        return f"{self.kind} {self.scope} {self.scope_id} ≤ {self.value} v{self.version}"


class RiskOverride(models.Model):
    """A time-boxed exception to one limit: `value` replaces the limit's value while active.

    `account` narrows the exception to one account (None: wherever the limit applies).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    limit = models.ForeignKey(RiskLimit, on_delete=models.CASCADE, related_name="overrides")
    account = models.ForeignKey(BrokerAccount, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    value = models.DecimalField(**AMOUNT)
    reason = models.CharField(max_length=500)
    valid_from = models.DateTimeField()
    valid_until = models.DateTimeField()
    created_by = models.CharField(max_length=255, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(valid_until__gt=models.F("valid_from")), name="override_window"),
        ]
        indexes = [models.Index(fields=["tenant", "valid_until"], name="riskoverride_tenant_until")]

    def __str__(self) -> str:
        return f"override {self.limit_id} → {self.value} until {self.valid_until}"


class KillSwitch(models.Model):
    """A kill switch on a tenant, an account or a strategy: new orders in scope get 423, working
    ones are cancelled by the orders app. One active switch per scope (engaging again returns it)."""

    class Scope(models.TextChoices):
        TENANT = "TENANT"
        ACCOUNT = "ACCOUNT"
        STRATEGY = "STRATEGY"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    scope = models.CharField(max_length=12, choices=Scope.choices)
    scope_id = models.CharField(max_length=64, blank=True)
    reason = models.CharField(max_length=500)
    active = models.BooleanField(default=True)
    engaged_at = models.DateTimeField()
    engaged_by = models.CharField(max_length=255, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    released_by = models.CharField(max_length=255, blank=True)
    cancelled_orders = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "scope", "scope_id"],
                condition=models.Q(active=True),
                name="killswitch_one_active_per_scope",
            )
        ]
        indexes = [models.Index(fields=["tenant", "-created_at", "-id"], name="killswitch_tenant_created")]

    def __str__(self) -> str:
        return f"kill switch {self.scope} {self.scope_id} {'active' if self.active else 'released'}"


class CircuitBreaker(models.Model):
    """A breaker of one kind on one account (None: the whole tenant). OPEN means tripped: it
    halts (or restricts to reducing) the scope until reset by hand or, for AUTO, at `reset_at`."""

    class Kind(models.TextChoices):
        REJECT_STORM = "REJECT_STORM"
        DAILY_LOSS = "DAILY_LOSS"
        ACK_LATENCY = "ACK_LATENCY"
        STALE_MARKET_DATA = "STALE_MARKET_DATA"
        RECONCILIATION_BREAK = "RECONCILIATION_BREAK"

    class State(models.TextChoices):
        CLOSED = "CLOSED"
        OPEN = "OPEN"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey(BrokerAccount, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    state = models.CharField(max_length=8, choices=State.choices, default=State.CLOSED)
    action = models.CharField(max_length=12, choices=_choices(TradingState), default=TradingState.HALTED)
    reason = models.CharField(max_length=500, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    manual = models.BooleanField(default=False)
    tripped_at = models.DateTimeField(null=True, blank=True)
    reset_at = models.DateTimeField(null=True, blank=True)
    trips = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "kind", "account"], name="breaker_tenant_kind_account_unique", nulls_distinct=False
            )
        ]
        indexes = [models.Index(fields=["tenant", "state"], name="breaker_tenant_state")]

    def __str__(self) -> str:
        return f"{self.kind} {self.account_id or 'tenant'} {self.state}"


class AccountRisk(models.Model):
    """Risk state of one account: capital (equity before P&L), peak equity for the trailing
    drawdown, the manual trading state, the calendar it follows, and the de-risk state machine."""

    account = models.OneToOneField(BrokerAccount, on_delete=models.CASCADE, primary_key=True, related_name="+")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    capital = models.DecimalField(**AMOUNT, null=True, blank=True)
    peak_equity = models.DecimalField(**AMOUNT, default=Decimal(0))
    trading_state = models.CharField(max_length=12, choices=_choices(TradingState), default=TradingState.ACTIVE)
    calendar = models.CharField(max_length=16, blank=True)
    derisk_state = models.CharField(max_length=12, choices=_choices(DeriskState), default=DeriskState.NORMAL)
    derisk_day = models.DateField(null=True, blank=True)
    # Set by the de-risk playbook task (apps.risk.services.playbook): when and why the state last moved.
    derisk_at = models.DateTimeField(null=True, blank=True)
    derisk_reason = models.CharField(max_length=255, blank=True)
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.account_id} {self.trading_state} {self.derisk_state}"


class ReductionIntent(models.Model):
    """One reduction the HARD_DERISK playbook asks for: trade `quantity` of an instrument towards
    flat. Announced on `ev.intents`; the orders app places it (idempotently: the order's
    client_order_id is derived from the intent id) and records the order or the refusal here.
    One intent per account, exchange-local day and instrument."""

    class Status(models.TextChoices):
        PENDING = "PENDING"
        ORDERED = "ORDERED"
        FAILED = "FAILED"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey(BrokerAccount, on_delete=models.CASCADE, related_name="+")
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="+")
    day = models.DateField()
    symbol = models.CharField(max_length=32)
    side = models.CharField(max_length=4)
    quantity = models.DecimalField(**AMOUNT)
    reason = models.CharField(max_length=500)
    inputs = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    order_id = models.UUIDField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "day", "instrument"], name="reductionintent_one_per_day"),
            models.CheckConstraint(condition=models.Q(quantity__gt=0), name="reductionintent_quantity_positive"),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="reductionintent_status")]

    def __str__(self) -> str:
        return f"{self.side} {self.quantity} {self.symbol} ({self.status})"
