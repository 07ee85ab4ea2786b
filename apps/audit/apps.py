from django.apps import AppConfig
from django.conf import settings


class AuditConfig(AppConfig):
    """The append-only, hash-chained audit log."""

    name = "apps.audit"
    label = "audit"

    def ready(self) -> None:
        from apps.audit import services
        from apps.common import partitioning

        partitioning.register(
            partitioning.PartitionedTable(
                table="audit_auditlog",
                column="created_at",
                retention_months=lambda: settings.AUDIT_RETENTION_MONTHS,
                before_drop=services.audit_anchor_before_drop,
                maintenance_sql=("SET LOCAL oms.audit_maintenance = 'on'",),
            )
        )
