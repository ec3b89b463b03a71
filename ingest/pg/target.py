"""The table a load lands in: its name, its staging tables, and checks made before loading."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
from psycopg import sql

from ingest.errors import (
    BadColumnName,
    NotATable,
    RequiredColumnMissing,
    TooManyColumns,
    UnsupportedColumnType,
    Where,
)
from ingest.pg.db import Conn
from ingest.stages import encode


@dataclass(frozen=True)
class Target:
    """The table a source lands in."""

    schema: str
    table: str
    if_exists: str

    @property
    def display(self) -> str:
        """The schema-qualified name, quoted as PostgreSQL would need it."""
        return f"{_quote(self.schema)}.{_quote(self.table)}"

    def ident(self) -> sql.Composed:
        """The qualified name as a driver-quoted identifier."""
        return sql.SQL(".").join([sql.Identifier(self.schema), sql.Identifier(self.table)])


def _quote(name: str) -> str:
    plain = name.isidentifier() and name == name.lower() and name.isascii()
    return name if plain else '"' + name.replace('"', '""') + '"'


def staging_prefix(table: str) -> str:
    """The name prefix of a target's staging tables: unique per table, and under 63 bytes."""
    digest = hashlib.sha1(table.encode()).hexdigest()[:6]
    return f"{table.encode()[:36].decode(errors='ignore')}_{digest}__stg_"


def leftovers(conn: Conn, target: Target) -> list[Target]:
    """Staging tables of `target` that runs which did not finish left behind."""
    prefix = staging_prefix(target.table)
    rows = conn.execute(
        "select tablename from pg_catalog.pg_tables where schemaname = %s"
        " and starts_with(tablename, %s)",
        (target.schema, prefix),
    ).fetchall()
    return [Target(target.schema, str(r[0]), "replace") for r in rows]


def table_oid(conn: Conn, target: Target) -> int | None:
    """The table's OID, or None when it does not exist."""
    row = conn.execute(
        "select c.oid from pg_catalog.pg_class c"
        " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = %s and c.relkind in ('r', 'p')",
        (target.schema, target.table),
    ).fetchone()
    return int(str(row[0])) if row else None


def table_exists(conn: Conn, target: Target) -> bool:
    """Whether the target table exists (a plain or partitioned table)."""
    return table_oid(conn, target) is not None


_RELATION = """
select c.oid, c.relkind::text, p.inhparent::regclass::text
from pg_catalog.pg_class c
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
left join pg_catalog.pg_inherits p on p.inhrelid = c.oid and c.relispartition
where n.nspname = %s and c.relname = %s
"""
_KINDS = {
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
    "p": "partitioned table",
    "S": "sequence",
    "i": "index",
    "I": "partitioned index",
    "c": "composite type",
    "t": "TOAST table",
}
_REQUIRED = """
select a.attname from pg_catalog.pg_attribute a
where a.attrelid = %s and a.attnum > 0 and not a.attisdropped and a.attnotnull
  and not a.atthasdef and a.attidentity = '' and a.attgenerated = ''
order by a.attnum
"""


def check_target(conn: Conn, target: Target, columns: list[str]) -> None:
    """Refuse, before loading, a target the load cannot fill as the config asks.

    Args:
        conn: any connection; nothing is changed.
        target: the table and `if_table_exists`.
        columns: the columns the load brings, lineage included.

    Raises:
        NotATable: the name is a view, materialized view, foreign table or the like; or, for
            replace, a partitioned table or a partition, which a plain table would stand in for.
        RequiredColumnMissing: an append's table has a NOT NULL column without a default that
            the load does not bring.
    """
    row = conn.execute(_RELATION, (target.schema, target.table)).fetchone()
    if row is None:
        return
    oid, kind, parent = int(str(row[0])), str(row[1]), row[2]
    replacing = target.if_exists == "replace"
    if kind not in ("r", "p"):
        name = _KINDS.get(kind, f"relation of kind {kind!r}")
        raise NotATable(target.display, name, f"choose another table_name or drop the {name}")
    if replacing and (kind == "p" or parent is not None):
        name = "partitioned table" if kind == "p" else f"partition of {parent}"
        raise NotATable(
            target.display,
            name,
            "use if_table_exists: append (after a truncate, to replace its rows), or choose "
            "another table_name",
            what="a table a replace can swap (a plain table would stand in for it)",
        )
    if target.if_exists == "append":
        brought = set(columns)
        required = [
            str(r[0]) for r in conn.execute(_REQUIRED, (oid,)).fetchall() if r[0] not in brought
        ]
        if required:
            raise RequiredColumnMissing(target.display, required)


def add_lineage(conn: Conn, target: Target, lineage: tuple[str, str]) -> list[str]:
    """Add the lineage columns an existing table lacks, nullable: its rows keep NULL in them.

    Runs in the caller's transaction (an append's commit), so a failed run adds nothing.

    Returns:
        The columns added.
    """
    have = {
        str(r[0])
        for r in conn.execute(
            "select a.attname from pg_catalog.pg_attribute a"
            " join pg_catalog.pg_class c on c.oid = a.attrelid"
            " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = %s and c.relname = %s and a.attnum > 0 and not a.attisdropped",
            (target.schema, target.table),
        ).fetchall()
    }  # a partitioned table's too, which column_types leaves out (it takes no direct COPY)
    missing = [
        (name, kind)
        for name, kind in zip(lineage, ("timestamptz", "uuid"), strict=True)
        if name not in have
    ]
    if missing:
        conn.execute(
            sql.SQL("alter table {} {}").format(
                target.ident(),
                sql.SQL(", ").join(
                    sql.SQL("add column {} {}").format(sql.Identifier(name), sql.SQL(kind))
                    for name, kind in missing
                ),
            )
        )
    return [name for name, _ in missing]


MAX_COLUMNS = 1600  # PostgreSQL's MaxHeapAttributeNumber: columns a table can have


def check_column_names(path: Where, names: list[str], lineage: Sequence[str] = ()) -> None:
    """Refuse names PostgreSQL would truncate or reject, names used twice, and too many columns.

    Args:
        path: the file the names come from.
        names: the file's columns.
        lineage: the columns the load adds to every row.

    Raises:
        BadColumnName: naming the file and the column.
        TooManyColumns: the file's columns and the lineage ones exceed PostgreSQL's limit.
    """
    if len(names) + len(lineage) > MAX_COLUMNS:
        raise TooManyColumns(path, len(names), list(lineage), MAX_COLUMNS)
    seen: set[str] = set()
    for name in [*names, *lineage]:
        if not name.strip():
            raise BadColumnName(path, name, "is empty")
        if "\x00" in name:
            raise BadColumnName(path, name, "contains a NUL character")
        if len(name.encode()) > 63:
            raise BadColumnName(path, name, "is longer than PostgreSQL's 63-byte limit")
        if name in seen:
            raise BadColumnName(path, name, "appears twice (or clashes with a lineage column)")
        seen.add(name)


def check_column_types(path: Where, schema: dict[str, pl.DataType]) -> None:
    """Refuse a column whose type (after the config's casts) has no PostgreSQL encoding.

    Raises:
        UnsupportedColumnType: naming the file, the column and its type.
    """
    for name, dtype in schema.items():
        try:
            encode.pg_type(dtype)
        except TypeError:
            raise UnsupportedColumnType(path, name, str(dtype)) from None


def column_types(conn: Conn, target: Target) -> dict[str, str]:
    """The target's columns and their types as `format_type` spells them (empty if no table)."""
    rows = conn.execute(
        "select a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)"
        " from pg_catalog.pg_attribute a join pg_catalog.pg_class c on c.oid = a.attrelid"
        " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = %s and c.relkind = 'r'"
        " and a.attnum > 0 and not a.attisdropped",
        (target.schema, target.table),
    ).fetchall()
    return {str(name): str(kind) for name, kind in rows}
