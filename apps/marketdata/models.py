"""Market data subscriptions: which instruments each tenant wants quotes for."""

from __future__ import annotations

import uuid

from django.db import models

from apps.brokers.models import Instrument
from apps.tenants.models import Tenant, User


class MarketDataSubscription(models.Model):
    """A tenant's wish for live quotes of one instrument (one per tenant and instrument).

    IB lines are not per tenant: the gateway holds one line per instrument that at least one
    tenant subscribed to (the union, published to Redis by `services.feed_publish`), so
    subscribing to an instrument another tenant already has costs no extra line.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="+")
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "instrument"], name="mdsubscription_tenant_instrument_unique")
        ]
        indexes = [
            models.Index(fields=["tenant", "-created_at", "-id"], name="mdsubscription_tenant_created"),
            models.Index(fields=["instrument", "created_at"], name="mdsubscription_instrument"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.instrument_id}"
