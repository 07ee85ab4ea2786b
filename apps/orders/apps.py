from django.apps import AppConfig
from django.conf import settings


class OrdersConfig(AppConfig):
    """Orders, their lifecycle events and executions, idempotency keys, routing."""

    name = "apps.orders"
    label = "orders"

    def ready(self) -> None:
        from apps.common import partitioning
        from apps.orders.services.risk import order_book
        from apps.risk.book import register_book_source

        # Risk (below orders) reads open orders for /risk/status through this provider.
        register_book_source(order_book)

        partitioning.register(
            partitioning.PartitionedTable(
                table="orders_execution",
                column="executed_at",
                retention_months=lambda: settings.EXECUTION_RETENTION_MONTHS,
            )
        )
