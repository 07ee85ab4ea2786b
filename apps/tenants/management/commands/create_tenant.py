"""`manage.py create_tenant SLUG --name NAME --admin-email EMAIL --admin-password PASSWORD`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from apps.common.context import Actor
from apps.tenants.services.tenants import tenant_provision


class Command(BaseCommand):
    help = "Create a tenant and its first admin (idempotent); prints the tenant id."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--admin-email", required=True)
        parser.add_argument("--admin-password", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        slug = options["slug"]
        if slugify(slug) != slug:
            raise CommandError(f"{slug!r} is not a valid slug (lower-case letters, digits and hyphens)")
        result = tenant_provision(
            slug=slug,
            name=options["name"],
            admin_email=options["admin_email"],
            admin_password=options["admin_password"],
            actor=Actor.system("manage.py create_tenant"),
        )
        self.stdout.write(str(result.tenant.id))
