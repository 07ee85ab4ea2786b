"""Monthly partitions: created ahead, rows rescued from the default partition, retention drops."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from django.db import connection
from django.test import override_settings

from apps.audit.models import AuditLog
from apps.audit.services import audit_record, audit_verify
from apps.common import partitioning
from apps.common.context import Actor
from apps.common.tasks import partitions_maintain_task

pytestmark = pytest.mark.django_db


def _audit_spec() -> partitioning.PartitionedTable:
    return next(spec for spec in partitioning.registered() if spec.table == "audit_auditlog")


def _partitions() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'audit_auditlog'"
        )
        return {row[0] for row in cursor.fetchall()}


def test_audit_log_is_a_partitioned_table_with_months_ahead():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT partstrat FROM pg_partitioned_table t JOIN pg_class c ON c.oid = t.partrelid "
            "WHERE c.relname = 'audit_auditlog'"
        )
        assert cursor.fetchone() == ("r",)
    today = date.today()
    expected = {partitioning.partition_name("audit_auditlog", partitioning.month_start(today, k)) for k in range(0, 3)}
    assert expected <= _partitions()
    assert "audit_auditlog_default" in _partitions()


def test_maintenance_task_creates_partitions_ahead():
    with override_settings(PARTITIONS_AHEAD_MONTHS=8):
        report = partitions_maintain_task()
    eighth = partitioning.partition_name("audit_auditlog", partitioning.month_start(date.today(), 8))
    assert eighth in report["audit_auditlog"]["created"]
    assert eighth in _partitions()
    assert partitions_maintain_task()["audit_auditlog"]["created"] == []


def test_rows_in_the_default_partition_move_into_their_month(tenant):
    far = datetime(2031, 5, 17, 12, tzinfo=UTC)
    entry = audit_record(tenant_id=tenant.id, actor=Actor.system(), action="future", resource_type="x")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL oms.audit_maintenance = 'on'")
        cursor.execute("UPDATE audit_auditlog SET created_at = %s WHERE id = %s", [far, entry.id])
        cursor.execute("SELECT count(*) FROM audit_auditlog_default")
        assert cursor.fetchone() == (1,)
    created = partitioning.ensure_partitions(_audit_spec(), today=date(2031, 5, 1), months_ahead=0)
    assert "audit_auditlog_p2031_05" in created
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM audit_auditlog_default")
        assert cursor.fetchone() == (0,)
        cursor.execute("SELECT count(*) FROM audit_auditlog_p2031_05")
        assert cursor.fetchone() == (1,)
    assert AuditLog.objects.filter(id=entry.id).exists()


def test_retention_drops_old_partitions_and_the_chain_still_verifies(tenant):
    old_month = partitioning.month_start(date.today(), -30)
    spec = _audit_spec()
    partitioning.ensure_partitions(spec, today=partitioning.month_start(old_month, 1), months_ahead=0)
    old_entries = [
        audit_record(tenant_id=tenant.id, actor=Actor.system(), action="old", resource_type="x") for _ in range(3)
    ]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL oms.audit_maintenance = 'on'")
        cursor.execute(
            "UPDATE audit_auditlog SET created_at = %s WHERE id = ANY(%s)",
            [datetime(old_month.year, old_month.month, 2, tzinfo=UTC), [e.id for e in old_entries]],
        )
    audit_record(tenant_id=tenant.id, actor=Actor.system(), action="recent", resource_type="x")
    with override_settings(AUDIT_RETENTION_MONTHS=12):
        dropped = partitioning.drop_expired_partitions(spec, today=date.today())
    assert partitioning.partition_name("audit_auditlog", old_month) in dropped
    assert list(AuditLog.objects.filter(tenant_id=tenant.id).values_list("action", flat=True)) == ["recent"]
    verdict = audit_verify(tenant_id=tenant.id)
    assert verdict.valid, verdict.reason
    assert verdict.entries == 1
