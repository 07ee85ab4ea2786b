"""`manage.py seed_demo`: the development-only demo tenant (never run it in production)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.common.context import Actor
from apps.tenants.services.tenants import tenant_provision

DEMO_SLUG = "demo"
DEMO_ADMIN_EMAIL = "admin@demo.example"
DEMO_ADMIN_PASSWORD = "demo-admin-pass"  # development only; documented in the README


class Command(BaseCommand):
    help = "Create the demo tenant and its admin (development only; idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.ENVIRONMENT == "production":
            raise CommandError("seed_demo refuses to run with OMS_ENVIRONMENT=production")
        result = tenant_provision(
            slug=DEMO_SLUG,
            name="Demo Capital",
            admin_email=DEMO_ADMIN_EMAIL,
            admin_password=DEMO_ADMIN_PASSWORD,
            actor=Actor.system("manage.py seed_demo"),
        )
        admin = result.admin
        if not admin.is_staff:
            # The demo admin may use Django admin too, so operations can be tried out.
            admin.is_staff = admin.is_superuser = True
            admin.save(update_fields=["is_staff", "is_superuser"])
        self.stdout.write(f"demo tenant {result.tenant.id} ({DEMO_ADMIN_EMAIL} / {DEMO_ADMIN_PASSWORD})")
