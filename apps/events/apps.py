from django.apps import AppConfig
from django.conf import settings


class EventsConfig(AppConfig):
    """The transactional outbox, its relay to Redis Streams, and the stream readers."""

    name = "apps.events"
    label = "events"

    def ready(self) -> None:
        from apps.common import partitioning

        partitioning.register(
            partitioning.PartitionedTable(
                table="events_outboxevent",
                column="created_at",
                retention_months=lambda: settings.OUTBOX_RETENTION_MONTHS,
            )
        )
