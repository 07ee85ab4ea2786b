from django.apps import AppConfig
from django.conf import settings


class OrdersConfig(AppConfig):
    """Orders, their lifecycle events and executions, idempotency keys, routing."""

    name = "apps.orders"
    label = "orders"

    def ready(self) -> None:
        from apps.common import partitioning

        partitioning.register(
            partitioning.PartitionedTable(
                table="orders_execution",
                column="executed_at",
                retention_months=lambda: settings.EXECUTION_RETENTION_MONTHS,
            )
        )
