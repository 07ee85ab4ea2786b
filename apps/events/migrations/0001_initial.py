import uuid

from django.db import migrations, models
from django.db.models import Func, Value

from apps.common.migration_operations import CreatePartitionedModel, EnsurePartitions


class Migration(migrations.Migration):

    initial = True

    dependencies = []

    operations = [
        migrations.RunSQL(
            sql="CREATE SEQUENCE IF NOT EXISTS events_outboxevent_seq",
            reverse_sql="DROP SEQUENCE IF EXISTS events_outboxevent_seq",
        ),
        CreatePartitionedModel(
            partition_column="created_at",
            name="OutboxEvent",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                (
                    "seq",
                    models.BigIntegerField(
                        db_default=Func(
                            Value("events_outboxevent_seq"), function="nextval", output_field=models.BigIntegerField()
                        ),
                        editable=False,
                    ),
                ),
                ("tenant_id", models.UUIDField(blank=True, null=True)),
                ("stream", models.CharField(max_length=64)),
                ("kind", models.CharField(max_length=64)),
                ("aggregate_type", models.CharField(blank=True, max_length=64)),
                ("aggregate_id", models.CharField(blank=True, max_length=64)),
                ("payload", models.JSONField(default=dict)),
                ("trace_id", models.CharField(blank=True, max_length=64)),
                ("created_at", models.DateTimeField()),
                ("published_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "indexes": [
                    models.Index(
                        condition=models.Q(("published_at__isnull", True)), fields=["seq"], name="outbox_unpublished"
                    ),
                    models.Index(fields=["tenant_id", "-created_at"], name="outbox_tenant_created"),
                ],
            },
        ),
        EnsurePartitions("events_outboxevent", "created_at"),
    ]
