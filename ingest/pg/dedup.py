"""A merge's duplicate keys: keep one staged row per key, set the others aside, in SQL.

Runs in the commit's transaction, before the merge: ON CONFLICT cannot touch a row twice in one
statement, so a key must come once. The losers go to the quarantine table in the same
transaction, so they commit with the merge or not at all.
"""

from __future__ import annotations

from psycopg import sql

from ingest.errors_keyed import DuplicateKeys
from ingest.pg.db import Conn
from ingest.pg.target import Target
from ingest.stages.keys import ROW_COLUMN, MergeSpec
from ingest.state import quarantine

_I = sql.Identifier


def _names(names: tuple[str, ...] | list[str]) -> sql.Composable:
    return sql.SQL(", ").join(map(_I, names))


def dedup(conn: Conn, staging: Target, target: Target, spec: MergeSpec) -> int:
    """Keep one staged row per key (the dedup_sort winner, else the last); quarantine the rest."""
    order = [
        sql.SQL("{} {}").format(_I(c), sql.SQL("desc nulls last" if desc else "asc nulls last"))
        for c, desc in spec.dedup_sort
    ] + [sql.SQL("{} desc").format(_I(ROW_COLUMN))]
    found = conn.execute(
        sql.SQL(
            "create temporary table pgloadkit_losers on commit drop as"
            " select tid, place, copies, kept from ("
            "  select ctid as tid, {row} as place, row_number() over w as n,"
            "   count(*) over (partition by {keys}) as copies, first_value({row}) over w as kept"
            "  from {s} window w as (partition by {keys} order by {order})) ranked where n > 1"
        ).format(
            row=_I(ROW_COLUMN),
            keys=_names(spec.keys),
            s=staging.ident(),
            order=sql.SQL(", ").join(order),
        )
    )
    losers = max(found.rowcount, 0)
    if losers == 0:
        conn.execute("drop table pgloadkit_losers")
        return 0
    word = "line" if spec.row_kind == "csv_line" else "row"
    key = sql.SQL("jsonb_build_object({})::text").format(
        sql.SQL(", ").join(sql.SQL("{}, s.{}").format(sql.Literal(k), _I(k)) for k in spec.keys)
    )
    if spec.on_duplicate == "fail":
        first = conn.execute(
            sql.SQL(
                "select {key}, l.place, l.kept from {s} s join pgloadkit_losers l on s.ctid = l.tid"
                " order by l.place limit 1"
            ).format(key=key, s=staging.ident())
        ).fetchone()
        assert first is not None
        example = f"key {first[0]} at {word} {first[1]}, also at {word} {first[2]}"
        raise DuplicateKeys(spec.source_file, target.display, losers, example)
    q_schema, q_name = spec.quarantine
    into = quarantine.ensure_table(conn, q_schema, q_name)
    hidden = sql.SQL(" - ").join(sql.Literal(c) for c in (ROW_COLUMN, *spec.lineage))
    conn.execute(
        sql.SQL(
            "insert into {q} ({cols}) select %(run)s, %(file)s, %(kind)s, l.place, %(keys)s,"
            " 'duplicate_key', format('key %%s appears %%s times in the load; {word} %%s was kept',"
            " {key}, l.copies, l.kept), (to_jsonb(s) - {hidden})::text"
            " from {s} s join pgloadkit_losers l on s.ctid = l.tid"
        ).format(
            q=into,
            cols=_names(quarantine.COLUMNS),
            word=sql.SQL(word),
            key=key,
            hidden=hidden,
            s=staging.ident(),
        ),
        {
            "run": spec.run_id,
            "file": spec.source_file,
            "kind": spec.row_kind,
            "keys": ", ".join(spec.keys),
        },
    )
    conn.execute(
        sql.SQL("delete from {} s using pgloadkit_losers l where s.ctid = l.tid").format(
            staging.ident()
        )
    )
    conn.execute("drop table pgloadkit_losers")
    return losers
