"""Native PostgreSQL range partitioning by month, for every time-partitioned table.

A partitioned table is created by its app's migration (parent `PARTITION BY RANGE (<column>)`
plus a DEFAULT partition) and registered here with its retention. The beat task
`partitions_maintain_task` then keeps monthly partitions created ahead and drops those past
retention. Rows that land in the DEFAULT partition (maintenance did not run in time) are moved
into their month's partition when that partition is created, because PostgreSQL refuses to
create a partition whose range overlaps rows sitting in the default one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

from django.db import connection, transaction

_PARTITION_NAME = re.compile(r"^(?P<table>.+)_p(?P<year>\d{4})_(?P<month>\d{2})$")


@dataclass(frozen=True)
class PartitionedTable:
    """A table partitioned by month on `column`, kept `retention_months` back."""

    table: str
    column: str
    retention_months: Callable[[], int]
    # Called with the partition's name just before it is dropped (audit keeps its chain anchor).
    before_drop: Callable[[str], None] | None = None
    # SQL run inside the move transaction, e.g. to lift an append-only trigger for the move.
    maintenance_sql: tuple[str, ...] = field(default_factory=tuple)


_REGISTRY: dict[str, PartitionedTable] = {}


def register(spec: PartitionedTable) -> None:
    _REGISTRY[spec.table] = spec


def registered() -> list[PartitionedTable]:
    return list(_REGISTRY.values())


def month_start(day: date, offset: int = 0) -> date:
    index = day.year * 12 + (day.month - 1) + offset
    return date(index // 12, index % 12 + 1, 1)


def partition_name(table: str, month: date) -> str:
    return f"{table}_p{month.year:04d}_{month.month:02d}"


def list_partitions(table: str) -> list[str]:
    """Names of the partitions attached to `table` (from pg_inherits), default one included."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT child.relname FROM pg_inherits
            JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
            JOIN pg_class child ON child.oid = pg_inherits.inhrelid
            WHERE parent.relname = %s ORDER BY child.relname
            """,
            [table],
        )
        return [row[0] for row in cursor.fetchall()]


def ensure_partitions(spec: PartitionedTable, *, today: date, months_ahead: int) -> list[str]:
    """Create the partitions from last month to `months_ahead` ahead; return those created."""
    existing = set(list_partitions(spec.table))
    created = []
    for offset in range(-1, months_ahead + 1):
        start = month_start(today, offset)
        name = partition_name(spec.table, start)
        if name in existing:
            continue
        _create_partition(spec, start, name)
        created.append(name)
    return created


def _create_partition(spec: PartitionedTable, start: date, name: str) -> None:
    end = month_start(start, 1)
    default = f"{spec.table}_default"
    qn = connection.ops.quote_name
    with transaction.atomic(), connection.cursor() as cursor:
        # Blocks concurrent writers for the moment it takes; partitions are created ahead, so
        # the default partition is normally empty and this is quick.
        cursor.execute(f"LOCK TABLE {qn(spec.table)} IN SHARE ROW EXCLUSIVE MODE")
        cursor.execute(f"CREATE TABLE {qn(name)} (LIKE {qn(spec.table)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        for statement in spec.maintenance_sql:
            cursor.execute(statement)
        column = qn(spec.column)
        moved_filter = f"{column} >= %s AND {column} < %s"
        # Identifiers come from the registry in code, never from input; values are parameters.
        cursor.execute(f"INSERT INTO {qn(name)} SELECT * FROM {qn(default)} WHERE {moved_filter}", [start, end])  # noqa: S608
        cursor.execute(f"DELETE FROM {qn(default)} WHERE {moved_filter}", [start, end])  # noqa: S608
        cursor.execute(
            f"ALTER TABLE {qn(spec.table)} ATTACH PARTITION {qn(name)} FOR VALUES FROM (%s) TO (%s)", [start, end]
        )


def drop_expired_partitions(spec: PartitionedTable, *, today: date) -> list[str]:
    """Detach and drop monthly partitions that end before the retention cut-off."""
    cutoff = month_start(today, -spec.retention_months())
    dropped = []
    qn = connection.ops.quote_name
    for name in list_partitions(spec.table):
        match = _PARTITION_NAME.match(name)
        if not match or match["table"] != spec.table:
            continue
        end = month_start(date(int(match["year"]), int(match["month"]), 1), 1)
        if end > cutoff:
            continue
        with transaction.atomic(), connection.cursor() as cursor:
            if spec.before_drop:
                spec.before_drop(name)
            cursor.execute(f"ALTER TABLE {qn(spec.table)} DETACH PARTITION {qn(name)}")
            cursor.execute(f"DROP TABLE {qn(name)}")
        dropped.append(name)
    return dropped


def maintain(*, now: datetime, months_ahead: int) -> dict[str, dict[str, list[str]]]:
    """Run creation and retention for every registered table."""
    report = {}
    for spec in registered():
        report[spec.table] = {
            "created": ensure_partitions(spec, today=now.date(), months_ahead=months_ahead),
            "dropped": drop_expired_partitions(spec, today=now.date()),
        }
    return report


def create_partitioned_parent_sql(table: str, column: str) -> str:
    """The DEFAULT partition every partitioned parent gets in its migration."""
    return f'CREATE TABLE "{table}_default" PARTITION OF "{table}" DEFAULT'
