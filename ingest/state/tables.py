"""Create the metadata schema's tables, safe when several processes start at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import LiteralString

from psycopg import sql

from ingest.pg.db import Conn


def create_tables(conn: Conn, schema: str, lock_key: int, ddl: Sequence[LiteralString]) -> None:
    """Run `ddl` (each statement's `{schema}` the metadata schema) in the caller's transaction.

    `create ... if not exists` alone can still collide on the catalog's unique index when two
    processes race, so creation is serialised on the advisory lock `lock_key`, held until the
    transaction ends.
    """
    ident = sql.Identifier(schema)
    conn.execute("select pg_advisory_xact_lock(%s)", (lock_key,))
    conn.execute(sql.SQL("create schema if not exists {}").format(ident))
    for statement in ddl:
        conn.execute(sql.SQL(statement).format(schema=ident))
