"""Orders, their append-only lifecycle, executions and idempotency records."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db import models

from apps.brokers.models import BrokerAccount, Instrument
from apps.orders.state import OPEN, OrderState
from apps.tenants.models import Tenant, User

PRICE = {"max_digits": 20, "decimal_places": 8}
NOTIONAL = {"max_digits": 28, "decimal_places": 8}


def _choices(values: type) -> list[tuple[str, str]]:
    return [(member.value, member.value) for member in values]  # type: ignore[attr-defined]


class Side(models.TextChoices):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(models.TextChoices):
    MKT = "MKT"
    LMT = "LMT"
    STP = "STP"
    STP_LMT = "STP_LMT"
    TRAIL = "TRAIL"
    MOC = "MOC"
    LOC = "LOC"


class TimeInForce(models.TextChoices):
    DAY = "DAY"
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    GTD = "GTD"


class OrderClass(models.TextChoices):
    SIMPLE = "SIMPLE"
    BRACKET = "BRACKET"
    OCO = "OCO"
    OTO = "OTO"


class Order(models.Model):
    """One order (or one leg of a multi-leg order) of a tenant on one of its broker accounts.

    `state` is assigned only by `apps.orders.services.lifecycle.order_move`, which checks the
    transition table of `apps.orders.state` and writes the OrderEvent, the outbox event and the
    audit row in the same transaction. `version` grows with every change (the ETag / If-Match).
    `broker_order_id` is IB's permId (durable), not the session-scoped orderId.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="orders")
    account = models.ForeignKey(BrokerAccount, on_delete=models.PROTECT, related_name="orders")
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="orders")
    symbol = models.CharField(max_length=32)
    client_order_id = models.CharField(max_length=64)
    broker_order_id = models.CharField(max_length=64, blank=True)
    side = models.CharField(max_length=4, choices=Side.choices)
    quantity = models.DecimalField(**PRICE)
    filled_quantity = models.DecimalField(**PRICE, default=Decimal(0))
    filled_notional = models.DecimalField(**NOTIONAL, default=Decimal(0))
    order_type = models.CharField(max_length=8, choices=OrderType.choices)
    limit_price = models.DecimalField(**PRICE, null=True, blank=True)
    stop_price = models.DecimalField(**PRICE, null=True, blank=True)
    trail_amount = models.DecimalField(**PRICE, null=True, blank=True)
    trail_percent = models.DecimalField(**PRICE, null=True, blank=True)
    time_in_force = models.CharField(max_length=4, choices=TimeInForce.choices)
    good_till = models.DateTimeField(null=True, blank=True)
    outside_rth = models.BooleanField(default=False)
    state = models.CharField(max_length=16, choices=_choices(OrderState), default=OrderState.NEW.value)
    reject_reason = models.CharField(max_length=500, blank=True)
    strategy_id = models.UUIDField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    version = models.PositiveIntegerField(default=1)
    order_class = models.CharField(max_length=8, choices=OrderClass.choices, default=OrderClass.SIMPLE)
    parent = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="legs")
    oca_group = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    routed_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "client_order_id"], name="order_tenant_client_order_id_unique"),
            models.CheckConstraint(condition=models.Q(quantity__gt=0), name="order_quantity_positive"),
            models.CheckConstraint(
                condition=models.Q(filled_quantity__gte=0) & models.Q(filled_quantity__lte=models.F("quantity")),
                name="order_filled_within_quantity",
            ),
        ]
        indexes = [
            models.Index(fields=["tenant", "-created_at", "-id"], name="order_tenant_created"),
            models.Index(fields=["tenant", "state", "-created_at"], name="order_tenant_state"),
            models.Index(fields=["account", "-created_at"], name="order_account_created"),
            models.Index(fields=["tenant", "symbol", "-created_at"], name="order_tenant_symbol"),
            models.Index(fields=["broker_order_id"], name="order_broker_order_id"),
            # Risk reads the working orders under the account lock of every placement; a partial
            # index keeps that read proportional to the working orders, not to the order history.
            models.Index(
                fields=["tenant", "instrument"],
                condition=models.Q(state__in=sorted(state.value for state in OPEN)),
                name="order_tenant_working",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.client_order_id} {self.side} {self.quantity} {self.symbol} {self.state}"


class OrderEvent(models.Model):
    """One step of an order's lifecycle, append-only (a trigger refuses UPDATE and DELETE)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=32)
    from_state = models.CharField(max_length=16, blank=True)
    to_state = models.CharField(max_length=16)
    detail = models.JSONField(default=dict, blank=True)
    actor_label = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["order", "seq"], name="orderevent_order_seq_unique")]

    def __str__(self) -> str:
        return f"{self.order_id}#{self.seq} {self.kind} {self.from_state}→{self.to_state}"


class Execution(models.Model):
    """A fill the broker reported. Partitioned by month on `executed_at` (see the migration).

    Plain UUID columns instead of foreign keys: the table is partitioned and outlives orders'
    retention. Uniqueness of the broker's exec id is enforced by `ExecutionKey`, because a
    unique index on a partitioned table must include the partition column.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant_id = models.UUIDField()
    order_id = models.UUIDField()
    account_id = models.UUIDField()
    symbol = models.CharField(max_length=32)
    side = models.CharField(max_length=4, choices=Side.choices)
    broker_exec_id = models.CharField(max_length=64)
    quantity = models.DecimalField(**PRICE)
    price = models.DecimalField(**PRICE)
    commission = models.DecimalField(**PRICE, default=Decimal(0))
    currency = models.CharField(max_length=3)
    executed_at = models.DateTimeField()
    created_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["tenant_id", "-executed_at"], name="execution_tenant_time"),
            models.Index(fields=["order_id", "executed_at"], name="execution_order_time"),
        ]

    def __str__(self) -> str:
        return f"{self.broker_exec_id}: {self.side} {self.quantity} {self.symbol} @ {self.price}"


class ExecutionKey(models.Model):
    """Claims a broker exec id once per account: a replayed execution finds its key taken."""

    account_id = models.UUIDField()
    broker_exec_id = models.CharField(max_length=64)
    execution_id = models.UUIDField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account_id", "broker_exec_id"], name="executionkey_account_exec_unique")
        ]

    def __str__(self) -> str:
        return self.broker_exec_id


class IdempotencyRecord(models.Model):
    """The outcome of a write made with an `Idempotency-Key`, replayed for 24 hours.

    The row is inserted first in the write's own transaction, so a concurrent request with the
    same key waits on the unique index until the first commits, then replays its response.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(default=0)
    response = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="idempotency_tenant_key_unique")]
        indexes = [models.Index(fields=["expires_at"], name="idempotency_expires")]

    def __str__(self) -> str:
        return self.key
