"""The table a load lands in: its name, its staging tables, and checks made before loading."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from ingest.errors import BadColumnName

Conn = psycopg.Connection[tuple[object, ...]]


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


def table_exists(conn: Conn, target: Target) -> bool:
    """Whether the target table exists."""
    row = conn.execute(
        "select 1 from pg_catalog.pg_tables where schemaname = %s and tablename = %s",
        (target.schema, target.table),
    ).fetchone()
    return row is not None


def check_column_names(path: Path, names: list[str]) -> None:
    """Refuse names PostgreSQL would truncate or reject, and names used twice.

    Raises:
        BadColumnName: naming the file and the column.
    """
    seen: set[str] = set()
    for name in names:
        if not name.strip():
            raise BadColumnName(path, name, "is empty")
        if "\x00" in name:
            raise BadColumnName(path, name, "contains a NUL character")
        if len(name.encode()) > 63:
            raise BadColumnName(path, name, "is longer than PostgreSQL's 63-byte limit")
        if name in seen:
            raise BadColumnName(path, name, "appears twice (or clashes with a lineage column)")
        seen.add(name)


def default_workers(conn: Conn) -> int:
    """COPY connections when the config names none: one, unless PostgreSQL 16+ writes WAL.

    One connection creates its staging table in its own transaction, which lets PostgreSQL skip
    the free-space map and, with `wal_level=minimal`, the WAL. Up to 15 a table also grows a page
    at a time under its extension lock, so two COPYs into it mostly wait on each other. From 16,
    tables grow in bulk, and where WAL is written anyway two connections share the work.
    Measured on 244M rows, 2 cores: PostgreSQL 15 127 s with one against 140 s with two; the
    embedded PostgreSQL 18 with `wal_level=minimal` 92 s against 102 s.
    """
    if conn.info.server_version < 160000:
        return 1
    row = conn.execute("show wal_level").fetchone()
    return 1 if row is not None and row[0] == "minimal" else 2


# pg_type's names as pg_catalog.format_type spells them; the others are spelled alike.
_FORMATTED = {
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
    "time": "time without time zone",
}


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


def type_mismatches(table: dict[str, str], wanted: dict[str, str]) -> list[str]:
    """The `wanted` columns (name: pg_type name) that `table` lacks or has with another type.

    Binary COPY sends each value in its type's own format, so it can fill a column only of the
    very type it encoded; anything else needs the staging table and an INSERT's casts.
    """
    found = []
    for name, kind in wanted.items():
        have, want = table.get(name), _FORMATTED.get(kind, kind)
        if have != want:
            found.append(f"{name!r} is {have or 'missing'} in the table, {want} in this load")
    return found
