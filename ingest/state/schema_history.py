"""The schema history in PostgreSQL: each source's recorded columns, versioned; the live table's.

`drift` diffs and decides; this module reads and writes what the diff compares against.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ingest.errors import IngestError
from ingest.pg.db import Conn
from ingest.state.drift import ColumnSpec, Drift, diff, fingerprint

_LOCK_KEY = 0x70676C6B  # advisory lock class of this module ("pglk"); second key: 0 or a source


def _has_table(conn: Conn, metadata_schema: str) -> bool:
    row = conn.execute(
        "select 1 from pg_catalog.pg_tables where schemaname = %s and tablename = 'schemas'",
        (metadata_schema,),
    ).fetchone()
    return row is not None


def ensure_metadata(conn: Conn, metadata_schema: str) -> None:
    """Create `<metadata_schema>.schemas` if missing; safe when several processes race."""
    if _has_table(conn, metadata_schema):
        return
    with conn.transaction():
        # Concurrent CREATE ... IF NOT EXISTS can still collide on the catalog's unique index.
        conn.execute("select pg_catalog.pg_advisory_xact_lock(%s::int4, 0)", (_LOCK_KEY,))
        conn.execute(
            sql.SQL("create schema if not exists {}").format(sql.Identifier(metadata_schema))
        )
        conn.execute(
            sql.SQL(
                "create table if not exists {} (source text not null,"
                " target_table text not null, version integer not null, columns jsonb not null,"
                " fingerprint text not null, run_id text not null,"
                " recorded_at timestamptz not null default now(), primary key (source, version))"
            ).format(sql.Identifier(metadata_schema, "schemas"))
        )


def _specs(data: object) -> list[ColumnSpec]:
    assert isinstance(data, list)
    return [ColumnSpec(str(c["name"]), str(c["type"]), bool(c["nullable"])) for c in data]


def latest_schema(
    conn: Conn, metadata_schema: str, source: str
) -> tuple[int, list[ColumnSpec]] | None:
    """The newest recorded (version, columns) of a source, or None (nothing is created)."""
    if not _has_table(conn, metadata_schema):
        return None
    row = conn.execute(
        sql.SQL(
            "select version, columns from {} where source = %s order by version desc limit 1"
        ).format(sql.Identifier(metadata_schema, "schemas")),
        (source,),
    ).fetchone()
    return None if row is None else (int(str(row[0])), _specs(row[1]))


def record_schema(
    conn: Conn,
    metadata_schema: str,
    source: str,
    table: str,
    columns: Sequence[ColumnSpec],
    run_id: str,
) -> int:
    """Record the columns as a new version unless they (and the table) equal the latest one.

    Runs in the caller's transaction when one is open (as a savepoint), so it commits with it.

    Returns:
        The new version, or the latest one when nothing changed.
    """
    ensure_metadata(conn, metadata_schema)
    target = sql.Identifier(metadata_schema, "schemas")
    digest = fingerprint(columns)
    with conn.transaction():
        # Serialises version numbering per source; held until the outer transaction ends.
        conn.execute(
            "select pg_catalog.pg_advisory_xact_lock(%s::int4, pg_catalog.hashtext(%s))",
            (_LOCK_KEY, source),
        )
        row = conn.execute(
            sql.SQL(
                "select version, fingerprint, target_table from {} where source = %s"
                " order by version desc limit 1"
            ).format(target),
            (source,),
        ).fetchone()
        if row is not None and row[1] == digest and row[2] == table:
            return int(str(row[0]))
        version = 1 if row is None else int(str(row[0])) + 1
        payload = [{"name": c.name, "type": c.pg_type, "nullable": c.nullable} for c in columns]
        conn.execute(
            sql.SQL(
                "insert into {} (source, target_table, version, columns, fingerprint, run_id)"
                " values (%s, %s, %s, %s, %s, %s)"
            ).format(target),
            (source, table, version, Jsonb(payload), digest, run_id),
        )
    return version


def table_columns(
    conn: Conn, schema: str, table: str, exclude: Collection[str] = ()
) -> list[ColumnSpec] | None:
    """The target table's columns as PostgreSQL has them now, minus `exclude` (lineage), or None."""
    row = conn.execute(
        "select c.oid from pg_catalog.pg_class c"
        " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = %s and c.relkind in ('r', 'p')",
        (schema, table),
    ).fetchone()
    if row is None:
        return None
    rows = conn.execute(
        "select attname, pg_catalog.format_type(atttypid, atttypmod), not attnotnull"
        " from pg_catalog.pg_attribute where attrelid = %s and attnum > 0 and not attisdropped"
        " order by attnum",
        (row[0],),
    ).fetchall()
    return [ColumnSpec(str(n), str(t), bool(u)) for n, t, u in rows if n not in exclude]


def check(
    conn: Conn,
    metadata_schema: str,
    source: str,
    schema: str,
    table: str,
    columns: Sequence[ColumnSpec],
    exclude: Collection[str] = (),
) -> Drift:
    """Drift of `columns` from the last recorded schema, else from the live table, else none."""
    recorded = latest_schema(conn, metadata_schema, source)
    if recorded is not None:
        return diff(recorded[1], columns)
    live = table_columns(conn, schema, table, exclude)
    if live is None:
        return Drift()
    # The loader creates every column nullable, so the table cannot tell what the source declares.
    declared = {c.name: c.nullable for c in columns}
    return diff([replace(c, nullable=declared.get(c.name, c.nullable)) for c in live], columns)


def evolve(conn: Conn, source: str, table: str, statements: Sequence[sql.Composed]) -> None:
    """Run `decide`'s DDL in the caller's open transaction.

    Raises:
        IngestError: a widening hit a view that reads the column (PostgreSQL refuses the ALTER).
    """
    for statement in statements:
        try:
            conn.execute(statement)
        except psycopg.errors.FeatureNotSupported as exc:
            raise IngestError(
                f"source {source!r}: cannot evolve {table}: {exc.diag.message_primary} "
                f"({exc.diag.message_detail}); nothing was changed."
                "\n  fix: drop the views that read it (dbt recreates its "
                "own on the next build) and run again"
            ) from None
