from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0001_initial"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="order",
            index=models.Index(
                condition=models.Q(state__in=["NEW", "PARTIALLY_FILLED", "PENDING_CANCEL", "PENDING_MODIFY", "ROUTED"]),
                fields=["tenant", "instrument"],
                name="order_tenant_working",
            ),
        ),
    ]
