"""Swap a staged table in for its target in the caller's transaction, keeping dependent views."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from ingest.errors import IngestError

if TYPE_CHECKING:
    from ingest.target import Target

Conn = psycopg.Connection[tuple[object, ...]]

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


def table_oid(conn: Conn, target: Target) -> int | None:
    """The table's OID, or None when it does not exist."""
    row = conn.execute(
        "select c.oid from pg_catalog.pg_class c"
        " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = %s and c.relkind in ('r', 'p')",
        (target.schema, target.table),
    ).fetchone()
    return int(str(row[0])) if row else None


_CONSTRAINTS = """
select conname, pg_catalog.pg_get_constraintdef(oid)
from pg_catalog.pg_constraint
where conrelid = %(oid)s and contype in ('p', 'u', 'c', 'x')
order by contype = 'p' desc, conname
"""
_INDEXES = """
select pg_catalog.pg_get_indexdef(i.indexrelid)
from pg_catalog.pg_index i
where i.indrelid = %(oid)s
  and not exists (select 1 from pg_catalog.pg_constraint c where c.conindid = i.indexrelid)
"""
_GRANTS = """
select a.grantee, a.privilege_type, a.is_grantable
from pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
where c.oid = %(oid)s and a.grantee <> c.relowner
"""
_COMMENTS = """
select null::text, pg_catalog.obj_description(%(oid)s, 'pg_class')
union all
select a.attname, pg_catalog.col_description(%(oid)s, a.attnum)
from pg_catalog.pg_attribute a
where a.attrelid = %(oid)s and a.attnum > 0 and not a.attisdropped
"""


@dataclass(frozen=True)
class _Kept:
    """What the old table had besides its rows, as SQL to give the new one the same."""

    structure: list[sql.Composed]  # constraints and indexes: the new rows must fit them
    extras: list[tuple[str, sql.Composed]]  # grants and comments: skipped if they no longer fit


def _kept(conn: Conn, oid: int, target: Target) -> _Kept:
    table = target.ident()
    structure: list[sql.Composed] = [
        sql.SQL("alter table {} add constraint {} {}").format(
            table, sql.Identifier(str(name)), sql.SQL(str(definition))
        )
        for name, definition in conn.execute(_CONSTRAINTS, {"oid": oid}).fetchall()
    ]  # definitions come from the server's own catalog
    structure += [
        sql.Composed([sql.SQL(str(d))]) for (d,) in conn.execute(_INDEXES, {"oid": oid}).fetchall()
    ]
    extras: list[tuple[str, sql.Composed]] = []
    for grantee, privilege, grantable in conn.execute(_GRANTS, {"oid": oid}).fetchall():
        role = (
            sql.SQL("public")
            if str(grantee) == "0"
            else sql.SQL("{}").format(sql.Identifier(_role_name(conn, int(str(grantee)))))
        )
        option = sql.SQL(" with grant option") if grantable else sql.SQL("")
        extras.append(
            (
                f"grant {privilege}",
                sql.SQL("grant {} on table {} to {}{}").format(
                    sql.SQL(str(privilege)), table, role, option
                ),
            )
        )
    for column, text in conn.execute(_COMMENTS, {"oid": oid}).fetchall():
        if text is None:
            continue
        if column is None:
            statement = sql.SQL("comment on table {} is {}").format(table, sql.Literal(text))
        else:
            statement = sql.SQL("comment on column {}.{} is {}").format(
                table, sql.Identifier(str(column)), sql.Literal(text)
            )
        extras.append((f"comment on {column or 'the table'}", statement))
    return _Kept(structure, extras)


def _role_name(conn: Conn, oid: int) -> str:
    row = conn.execute("select rolname from pg_catalog.pg_roles where oid = %s", (oid,)).fetchone()
    return str(row[0]) if row else str(oid)


def replace_table(conn: Conn, staging: Target, target: Target, log: Callable[[str], None]) -> None:
    """Drop the target and rename the staging table to it, keeping what the old table had.

    Runs in the caller's open transaction, so readers see the old table or the new one. The new
    table gets the old one's constraints, indexes, grants and comments, and the views that read
    it are recreated. A view, grant or comment that no longer fits the new columns is dropped
    and named in the log (dbt recreates its own views on the next build).

    Raises:
        IngestError: the new rows break a constraint or index of the old table; nothing changes.
    """
    oid = table_oid(conn, target)
    views: list[tuple[str, str, str, str]] = []
    kept = _Kept([], [])
    if oid is not None:
        conn.execute(sql.SQL("lock table {} in access exclusive mode").format(target.ident()))
        views = [
            (str(s), str(n), str(k), str(d))
            for s, n, k, d, _ in conn.execute(_DEPENDENT_VIEWS, {"oid": oid}).fetchall()
        ]
        kept = _kept(conn, oid, target)
        conn.execute(sql.SQL("drop table {} cascade").format(target.ident()))
    conn.execute(
        sql.SQL("alter table {} rename to {}").format(staging.ident(), sql.Identifier(target.table))
    )
    for statement in kept.structure:
        try:
            with conn.transaction():
                conn.execute(statement)
        except psycopg.Error as exc:
            raise IngestError(
                f"the new rows for {target.display} do not fit what the table had "
                f"({statement.as_string(conn)}): {str(exc).splitlines()[0]}; nothing was changed. "
                "Fix the data, or drop the constraint or index first."
            ) from None
    for what, statement in kept.extras:
        _try(conn, statement, log, f"{what} on {target.display} no longer fits and was skipped")
    for schema, name, kind, definition in views:
        kind_sql = sql.SQL("materialized view" if kind == "m" else "view")
        statement = sql.SQL("create {} {}.{} as {}").format(
            kind_sql,
            sql.Identifier(schema),
            sql.Identifier(name),
            sql.SQL(definition.rstrip().rstrip(";")),
        )  # definition text comes from the server
        _try(
            conn,
            statement,
            log,
            f"view {schema}.{name} no longer fits {target.display} and was dropped",
        )


def _try(conn: Conn, statement: sql.Composed, log: Callable[[str], None], message: str) -> None:
    try:
        with conn.transaction():
            conn.execute(statement)
    except psycopg.Error as exc:
        log(f"{message}: {str(exc).splitlines()[0]}")
