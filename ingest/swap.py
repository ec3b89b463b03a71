"""Swap a staged table in for its target in the caller's transaction, keeping dependent views."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from ingest.load import Target

_DEPENDENT_VIEWS = """
with recursive deps(oid, depth) as (
    select r.ev_class, 1
    from pg_catalog.pg_depend d
    join pg_catalog.pg_rewrite r on r.oid = d.objid
    where d.classid = 'pg_catalog.pg_rewrite'::regclass
      and d.refobjid = %(oid)s and r.ev_class <> %(oid)s
    union
    select r.ev_class, deps.depth + 1
    from deps
    join pg_catalog.pg_depend d on d.refobjid = deps.oid
    join pg_catalog.pg_rewrite r on r.oid = d.objid
    where d.classid = 'pg_catalog.pg_rewrite'::regclass and r.ev_class <> deps.oid
)
select n.nspname, c.relname, c.relkind, pg_catalog.pg_get_viewdef(c.oid), max(deps.depth)
from deps
join pg_catalog.pg_class c on c.oid = deps.oid
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
group by n.nspname, c.relname, c.relkind, c.oid
order by max(deps.depth)
"""


def table_oid(conn: psycopg.Connection[tuple[object, ...]], target: Target) -> int | None:
    """The table's OID, or None when it does not exist."""
    row = conn.execute(
        "select c.oid from pg_catalog.pg_class c"
        " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = %s and c.relkind in ('r', 'p')",
        (target.schema, target.table),
    ).fetchone()
    return int(str(row[0])) if row else None


def replace_table(
    conn: psycopg.Connection[tuple[object, ...]],
    staging: Target,
    target: Target,
    log: Callable[[str], None],
) -> None:
    """Drop the target and rename the staging table to it, recreating views that read it.

    Runs in the caller's open transaction, so readers see the old table or the new one. A view
    that no longer fits the new columns is left dropped and named in the log (dbt recreates its
    own views on the next build).
    """
    oid = table_oid(conn, target)
    views: list[tuple[str, str, str, str]] = []
    if oid is not None:
        conn.execute(sql.SQL("lock table {} in access exclusive mode").format(target.ident()))
        views = [
            (str(s), str(n), str(k), str(d))
            for s, n, k, d, _ in conn.execute(_DEPENDENT_VIEWS, {"oid": oid}).fetchall()
        ]
        conn.execute(sql.SQL("drop table {} cascade").format(target.ident()))
    conn.execute(
        sql.SQL("alter table {} rename to {}").format(staging.ident(), sql.Identifier(target.table))
    )
    for schema, name, kind, definition in views:
        kind_sql = sql.SQL("materialized view" if kind == "m" else "view")
        statement = sql.SQL("create {} {}.{} as {}").format(
            kind_sql,
            sql.Identifier(schema),
            sql.Identifier(name),
            sql.SQL(definition.rstrip().rstrip(";")),
        )  # definition text comes from the server
        try:
            with conn.transaction():
                conn.execute(statement)
        except psycopg.Error as exc:
            log(
                f"view {schema}.{name} no longer fits {target.display} and was dropped: "
                f"{str(exc).splitlines()[0]}"
            )
