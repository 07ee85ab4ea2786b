"""What the IB gateway persists: order-id leases, order tickets, the execution journal, and
reconciliation runs with their drifts. (Imported by `apps.brokers.models`; app label `brokers`.)"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db import models

QUANTITY = {"max_digits": 20, "decimal_places": 8}


class OrderIdLease(models.Model):
    """The highest IB order id ever used per (gateway login, client id).

    IB's `nextValidId` is only a hint: after a gateway restart it can go backwards and hand out
    ids already used, and IB then binds callbacks of two orders to one id. Every id the gateway
    sends is leased here first (an atomic `UPDATE … RETURNING`), above both this mark and IB's hint.
    """

    login = models.CharField(max_length=255)
    client_id = models.IntegerField()
    high_water = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["login", "client_id"], name="orderidlease_login_client_unique")]

    def __str__(self) -> str:
        return f"{self.login}#{self.client_id}: {self.high_water}"


class TicketStatus(models.TextChoices):
    SUBMITTING = "SUBMITTING"  # written before the send; still so after a crash = outcome unknown
    WORKING = "WORKING"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


TICKET_TERMINAL = frozenset({TicketStatus.FILLED, TicketStatus.CANCELLED, TicketStatus.REJECTED, TicketStatus.EXPIRED})


class OrderTicket(models.Model):
    """What the gateway sent to IB for one of our orders, and what IB said about it.

    Written (SUBMITTING, with its leased IB order id) before the order goes out, so that after a
    crash the gateway knows which sends have an unknown outcome and looks them up at IB by
    orderRef (`client_order_id`) before sending anything again. `perm_id` is IB's durable id.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey("brokers.BrokerAccount", on_delete=models.CASCADE, related_name="ib_tickets")
    tenant_id = models.UUIDField()
    order_id = models.UUIDField()
    parent_order_id = models.UUIDField(null=True, blank=True)
    client_order_id = models.CharField(max_length=64)
    symbol = models.CharField(max_length=32)
    con_id = models.BigIntegerField(null=True, blank=True)
    side = models.CharField(max_length=4)
    quantity = models.DecimalField(**QUANTITY)
    filled = models.DecimalField(**QUANTITY, default=Decimal(0))
    ib_client_id = models.IntegerField()
    ib_order_id = models.BigIntegerField()
    perm_id = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=TicketStatus.choices, default=TicketStatus.SUBMITTING)
    pending = models.CharField(max_length=8, blank=True)  # "cancel" / "modify" awaiting IB
    ib_status = models.CharField(max_length=32, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    spec = models.JSONField(default=dict)  # the command's order, to send it again if IB never got it
    sends = models.PositiveSmallIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "order_id"], name="orderticket_account_order_unique"),
        ]
        indexes = [
            models.Index(fields=["account", "status"], name="orderticket_account_status"),
            models.Index(fields=["account", "client_order_id"], name="orderticket_account_ref"),
            models.Index(fields=["perm_id"], name="orderticket_perm"),
            # IB's callbacks name an order by (client id, order id) until its permId is bound.
            models.Index(fields=["account", "ib_client_id", "ib_order_id"], name="orderticket_account_ib_id"),
        ]

    def __str__(self) -> str:
        return f"{self.client_order_id} #{self.ib_order_id} {self.status}"


class ExecutionRecord(models.Model):
    """Every execution the gateway published: its cursor, and the positions our executions imply."""

    account = models.ForeignKey("brokers.BrokerAccount", on_delete=models.CASCADE, related_name="ib_executions")
    exec_id = models.CharField(max_length=64)
    order_id = models.UUIDField()
    perm_id = models.BigIntegerField()
    con_id = models.BigIntegerField()
    side = models.CharField(max_length=4)
    quantity = models.DecimalField(**QUANTITY)
    price = models.DecimalField(**QUANTITY)
    # The commission last published for it: a report arriving after the fill went out is sent
    # on as a correction (`commission` broker event), once.
    commission = models.DecimalField(**QUANTITY, default=Decimal(0))
    executed_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "exec_id"], name="executionrecord_account_exec")]
        indexes = [models.Index(fields=["account", "-executed_at"], name="executionrecord_account_time")]

    def __str__(self) -> str:
        return self.exec_id


class RunTrigger(models.TextChoices):
    RECONNECT = "RECONNECT"
    SCHEDULE = "SCHEDULE"
    MANUAL = "MANUAL"


class RunStatus(models.TextChoices):
    REQUESTED = "REQUESTED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class ReconciliationRun(models.Model):
    """One comparison of our orders, IB's orders and executions, and positions, for one account.

    A manual run is REQUESTED through the API and claimed by the account's gateway (a conditional
    UPDATE), which alone talks to IB; reconnect and scheduled runs start RUNNING.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey("brokers.BrokerAccount", on_delete=models.CASCADE, related_name="reconciliation_runs")
    trigger = models.CharField(max_length=16, choices=RunTrigger.choices)
    status = models.CharField(max_length=16, choices=RunStatus.choices)
    requested_by = models.CharField(max_length=255, blank=True)
    summary = models.JSONField(default=dict, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "-created_at", "-id"], name="reconrun_tenant_created"),
            models.Index(fields=["account", "status"], name="reconrun_account_status"),
        ]

    def __str__(self) -> str:
        return f"{self.account_id} {self.trigger} {self.status}"


class ReconciliationDrift(models.Model):
    """One difference a run found, and how it was resolved."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run = models.ForeignKey(ReconciliationRun, on_delete=models.CASCADE, related_name="drifts")
    kind = models.CharField(max_length=32)
    action = models.CharField(max_length=32)
    resolution = models.CharField(max_length=255)
    order_id = models.UUIDField(null=True, blank=True)
    client_order_id = models.CharField(max_length=64, blank=True)
    perm_id = models.BigIntegerField(null=True, blank=True)
    con_id = models.BigIntegerField(null=True, blank=True)
    ours = models.JSONField(default=dict, blank=True)
    ib = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.kind}: {self.resolution}"
