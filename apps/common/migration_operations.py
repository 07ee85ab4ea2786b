"""Migration operations for time-partitioned tables (native PostgreSQL declarative partitioning).

`CreatePartitionedModel` is `CreateModel` for the migration state, but creates the table as
`PARTITION BY RANGE (<column>)` with a DEFAULT partition. PostgreSQL requires the primary key of
a partitioned table to include the partition column, so the key becomes `(id, <column>)`; the
model keeps `id` as its Django primary key (UUIDs are unique on their own).
"""

from __future__ import annotations

from typing import Any

from django.db import migrations


class CreatePartitionedModel(migrations.CreateModel):
    def __init__(self, *args: Any, partition_column: str, **kwargs: Any) -> None:
        self.partition_column = partition_column
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        name, args, kwargs = super().deconstruct()
        kwargs["partition_column"] = self.partition_column
        return name, args, kwargs

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        model = to_state.apps.get_model(app_label, self.name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        qn = schema_editor.quote_name
        table, column = model._meta.db_table, model._meta.get_field(self.partition_column).column
        pk_column = model._meta.pk.column
        sql, params = schema_editor.table_sql(model)
        inline_pk = f"{qn(pk_column)} uuid NOT NULL PRIMARY KEY"
        if inline_pk not in sql:
            raise ValueError(f"{table}: expected a UUID primary key column {pk_column!r}")
        sql = sql.replace(inline_pk, f"{qn(pk_column)} uuid NOT NULL", 1)
        sql = (
            sql[: sql.rindex(")")] + f", PRIMARY KEY ({qn(pk_column)}, {qn(column)})) PARTITION BY RANGE ({qn(column)})"
        )
        schema_editor.execute(sql, params or None)
        schema_editor.execute(f"CREATE TABLE {qn(table + '_default')} PARTITION OF {qn(table)} DEFAULT")
        for index_sql in schema_editor._model_indexes_sql(model):
            schema_editor.execute(index_sql)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        model = from_state.apps.get_model(app_label, self.name)
        schema_editor.execute(f"DROP TABLE IF EXISTS {schema_editor.quote_name(model._meta.db_table)} CASCADE")

    def describe(self) -> str:
        return f"Create model {self.name} partitioned by range of {self.partition_column}"


class EnsurePartitions(migrations.RunPython):
    """Create this and the coming months' partitions right away, without waiting for beat."""

    def __init__(self, table: str, column: str) -> None:
        self.table, self.column = table, column
        super().__init__(self._forwards, migrations.RunPython.noop)

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return self.__class__.__name__, [self.table, self.column], {}

    def _forwards(self, apps: Any, schema_editor: Any) -> None:
        from django.conf import settings
        from django.utils import timezone

        from apps.common import partitioning

        spec = partitioning.PartitionedTable(table=self.table, column=self.column, retention_months=lambda: 10**6)
        partitioning.ensure_partitions(spec, today=timezone.now().date(), months_ahead=settings.PARTITIONS_AHEAD_MONTHS)
