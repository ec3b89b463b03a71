"""Swap a staged table in for its target in the caller's transaction, keeping what it had."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ingest.errors import ConstraintBroken
from ingest.pg.db import Conn
from ingest.pg.target import Target, table_oid

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


# Keys and checks first, then indexes, then foreign keys: the new table's own ones (to a
# parent, or to itself), then other tables' ones that reference it, which need its keys back.
_CONSTRAINTS = """
select n.nspname, c.relname, k.conname, k.contype, pg_catalog.pg_get_constraintdef(k.oid)
from pg_catalog.pg_constraint k
join pg_catalog.pg_class c on c.oid = k.conrelid
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where k.conrelid = %(oid)s and k.contype in ('p', 'u', 'c', 'x')
order by k.contype = 'p' desc, k.conname
"""
_INDEXES = """
select c.relname, pg_catalog.pg_get_indexdef(i.indexrelid)
from pg_catalog.pg_index i
join pg_catalog.pg_class c on c.oid = i.indexrelid
where i.indrelid = %(oid)s
  and not exists (select 1 from pg_catalog.pg_constraint k where k.conindid = i.indexrelid)
"""
_NOT_NULL = """
select a.attname
from pg_catalog.pg_attribute a
join pg_catalog.pg_attribute s on s.attrelid = %(staging)s::regclass and s.attname = a.attname
where a.attrelid = %(oid)s and a.attnum > 0 and not a.attisdropped and a.attnotnull
  and not s.attisdropped and not s.attnotnull
order by a.attnum
"""
_FOREIGN_KEYS = """
select n.nspname, c.relname, k.conname, k.contype, pg_catalog.pg_get_constraintdef(k.oid)
from pg_catalog.pg_constraint k
join pg_catalog.pg_class c on c.oid = k.conrelid
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where k.contype = 'f' and k.conparentid = 0
  and (k.conrelid = %(oid)s or k.confrelid = %(oid)s)
order by k.conrelid <> %(oid)s, n.nspname, c.relname, k.conname
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
class _Rule:
    """A constraint or index the new rows must fit, and how to tell the user they do not."""

    name: str
    owner: str  # the table it is defined on, as displayed
    definition: str
    statement: sql.Composed
    fix: str


@dataclass(frozen=True)
class _Kept:
    """What the old table had besides its rows, as SQL to give the new one the same."""

    structure: list[_Rule]  # constraints, indexes, foreign keys: the new rows must fit them
    extras: list[tuple[str, sql.Composed]]  # grants and comments: skipped if they no longer fit


def _constraint_rule(row: tuple[object, ...], target: Target) -> _Rule:
    """Re-adding one constraint: `ALTER TABLE ... ADD CONSTRAINT` checks every row against it."""
    schema, table, name, kind, definition = map(str, row)
    owner = Target(schema, table, "append")
    statement = sql.SQL("alter table {} add constraint {} {}").format(
        owner.ident(), sql.Identifier(name), sql.SQL(definition)
    )  # the definition comes from the server's own catalog
    label = f'{_KINDS.get(kind, "constraint")} "{name}"'
    if kind != "f":
        fix = f"fix the data, or drop {label} from {target.display} first"
    elif owner.display != target.display:
        fix = (
            f"keep the rows {owner.display} refers to in the file, delete or re-point those "
            f"rows of {owner.display} first, or drop its {label}"
        )
    else:
        fix = (
            "load only rows whose keys exist in the table it references (add them there "
            f"first), or drop {label} from {target.display} first"
        )
    return _Rule(label, owner.display, definition, statement, fix)


_KINDS = {
    "p": "primary key",
    "u": "unique constraint",
    "c": "check constraint",
    "f": "foreign key",
    "x": "exclusion constraint",
}


def _not_null_rule(conn: Conn, oid: int, staging: Target, target: Target) -> list[_Rule]:
    """NOT NULL on the old table's columns that the new one has: set in one statement, one scan."""
    names = [
        str(name) for (name,) in conn.execute(_NOT_NULL, {"oid": oid, "staging": staging.display})
    ]
    if not names:
        return []
    listed = ", ".join('"' + n.replace('"', '""') + '"' for n in names)
    statement = sql.SQL("alter table {} {}").format(
        target.ident(),
        sql.SQL(", ").join(
            sql.SQL("alter column {} set not null").format(sql.Identifier(n)) for n in names
        ),
    )
    fix = f"give those values in the file, or drop NOT NULL from {target.display} first"
    return [_Rule(f"NOT NULL on {listed}", target.display, "NOT NULL", statement, fix)]


def _kept(conn: Conn, oid: int, staging: Target, target: Target) -> _Kept:
    table = target.ident()
    structure = _not_null_rule(conn, oid, staging, target)
    found = conn.execute(_CONSTRAINTS, {"oid": oid}).fetchall()
    structure += [_constraint_rule(row, target) for row in found]
    structure += [
        _Rule(
            f'index "{name}"',
            target.display,
            str(d),
            sql.Composed([sql.SQL(str(d))]),
            f"fix the data, or drop the index from {target.display} first",
        )
        for name, d in conn.execute(_INDEXES, {"oid": oid}).fetchall()
    ]
    found = conn.execute(_FOREIGN_KEYS, {"oid": oid}).fetchall()
    structure += [_constraint_rule(row, target) for row in found]
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
    table gets the old one's NOT NULL columns, constraints, indexes, foreign keys, grants and
    comments; other tables' foreign keys to it are recreated on it, and so are the views that
    read it. A view, grant or comment that no longer fits the new columns is dropped and named
    in the log (dbt recreates its own views on the next build).

    Raises:
        ConstraintBroken: the new rows break a constraint, index or foreign key of the old
            table, or leave another table's foreign key to it dangling; the caller's
            transaction must then roll back, which leaves the old table as it was.
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
        kept = _kept(conn, oid, staging, target)
        conn.execute(sql.SQL("drop table {} cascade").format(target.ident()))
    conn.execute(
        sql.SQL("alter table {} rename to {}").format(staging.ident(), sql.Identifier(target.table))
    )
    for rule in kept.structure:
        try:
            with conn.transaction():
                conn.execute(rule.statement)
        except psycopg.Error as exc:
            # The detail names the offending key; the primary message only repeats the rule.
            detail = exc.diag.message_detail or exc.diag.message_primary
            reason = (detail or str(exc).splitlines()[0]).rstrip(".")
            raise ConstraintBroken(
                target.display, rule.name, rule.owner, rule.definition, reason, rule.fix
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
