"""The ledger's part of keyed loads: a run's merge counts, and each table's high-water mark.

The counts go to columns added to `runs`; the marks to a `cursors` table, one row per source,
table and cursor column. Both are written in the transaction that commits the rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

Conn = psycopg.Connection[Any]
COUNTS = ("inserted", "updated", "unchanged", "deleted", "duplicates", "skipped")
_LOCK_KEY = 0x70676C6B6D657267  # "pglkmerg": serialises `ensure` across processes


def ensure(conn: Conn, schema: str) -> None:
    """Add the count columns to `runs` and create `cursors`, once; call it before the run."""
    ident = sql.Identifier(schema)
    missing = conn.execute(
        "select c from unnest(%s::text[]) c where not exists (select from pg_catalog.pg_attribute"
        " where attrelid = format('%%I.runs', %s::text)::regclass and attname = 'rows_' || c)",
        (list(COUNTS), schema),
    ).fetchall()
    exists = conn.execute(
        "select to_regclass(format('%%I.cursors', %s::text))", (schema,)
    ).fetchone()
    if not missing and exists is not None and exists[0] is not None:
        return  # nothing to change: no lock on `runs`, which other runs are writing to
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            sql.SQL("alter table {}.runs {}").format(
                ident,
                sql.SQL(", ").join(
                    sql.SQL("add column if not exists {} bigint").format(
                        sql.Identifier(f"rows_{c}")
                    )
                    for c in COUNTS
                ),
            )
        )
        conn.execute(
            sql.SQL(
                "create table if not exists {}.cursors (source text not null, target text not null,"
                " cursor_column text not null, pg_type text not null, high_water text not null,"
                " run_id text not null, updated_at timestamptz not null default now(),"
                " primary key (source, target, cursor_column))"
            ).format(ident)
        )


def record_counts(conn: Conn, schema: str, run_id: str, counts: Mapping[str, int]) -> None:
    """Write a run's merge counts to its `runs` row, in the caller's (the commit's) transaction."""
    known = [c for c in COUNTS if c in counts]
    if not known:
        return
    conn.execute(
        sql.SQL("update {}.runs set {} where run_id = %s").format(
            sql.Identifier(schema),
            sql.SQL(", ").join(
                sql.SQL("{} = %s").format(sql.Identifier(f"rows_{c}")) for c in known
            ),
        ),
        (*(counts[c] for c in known), run_id),
    )


def read_counts(conn: Conn, schema: str, run_id: str) -> dict[str, int]:
    """A run's merge counts as its commit recorded them (the ones it recorded)."""
    names = [c for c in COUNTS if c != "skipped"]
    row = conn.execute(
        sql.SQL("select {} from {}.runs where run_id = %s").format(
            sql.SQL(", ").join(sql.Identifier(f"rows_{c}") for c in names),
            sql.Identifier(schema),
        ),
        (run_id,),
    ).fetchone()
    if row is None:
        return {}
    return {name: int(str(v)) for name, v in zip(names, row, strict=True) if v is not None}


def high_water(conn: Conn, schema: str, source: str, target: str, column: str) -> object | None:
    """The largest cursor value a committed run loaded into the table, typed, or None."""
    row = conn.execute(
        sql.SQL(
            "select pg_type, high_water from {}.cursors"
            " where source = %s and target = %s and cursor_column = %s"
        ).format(sql.Identifier(schema)),
        (source, target, column),
    ).fetchone()
    if row is None:
        return None
    typed = conn.execute(
        sql.SQL("select %s::{}").format(sql.SQL(str(row[0]))), (row[1],)
    ).fetchone()
    return None if typed is None else typed[0]


def record_high_water(
    conn: Conn,
    schema: str,
    *,
    source: str,
    target: str,
    column: str,
    pg_type: str,
    value: object,
    run_id: str,
) -> None:
    """Raise the table's high-water mark to `value` (never lower it), in the commit's."""
    conn.execute(
        sql.SQL(
            "insert into {s}.cursors as c (source, target, cursor_column, pg_type, high_water,"
            " run_id) values (%(source)s, %(target)s, %(column)s, %(type)s,"
            " (%(value)s::{t})::text, %(run)s)"
            " on conflict (source, target, cursor_column) do update"
            " set high_water = excluded.high_water, pg_type = excluded.pg_type,"
            " run_id = excluded.run_id, updated_at = now()"
            " where c.pg_type <> excluded.pg_type"
            " or c.high_water::{t} < excluded.high_water::{t}"
        ).format(s=sql.Identifier(schema), t=sql.SQL(pg_type)),
        {
            "source": source,
            "target": target,
            "column": column,
            "type": pg_type,
            "value": value,
            "run": run_id,
        },
    )
