"""`manage.py audit_verify [--tenant SLUG]`: walk the audit hash chains; exit 1 on the first break.

It lives in the tenants app because it resolves tenant slugs; the chain logic is apps.audit's."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.audit.models import AuditChainHead
from apps.audit.services import audit_seal, audit_verify
from apps.tenants.models import Tenant


class Command(BaseCommand):
    help = "Verify the audit log's hash chain of one tenant (or of every chain)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--tenant", help="tenant slug; every chain when omitted")

    def handle(self, *args: Any, **options: Any) -> None:
        audit_seal()  # every committed entry has its chain (and its chain head) before the walk
        if options["tenant"]:
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"no tenant {options['tenant']!r}")
            chains = [(tenant.slug, tenant.id)]
        else:
            slugs = dict(Tenant.objects.values_list("id", "slug"))
            chains = [
                (slugs.get(head.chain, "(no tenant)"), head.chain if head.chain in slugs else None)
                for head in AuditChainHead.objects.all()
            ]
        broken = 0
        for label, tenant_id in chains:
            verdict = audit_verify(tenant_id=tenant_id)
            if verdict.valid:
                self.stdout.write(f"{label}: valid, {verdict.entries} entries")
            else:
                broken += 1
                self.stdout.write(f"{label}: BROKEN at entry {verdict.first_bad_id}: {verdict.reason}")
        if broken:
            raise CommandError(f"{broken} audit chain(s) broken")
