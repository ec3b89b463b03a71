"""Merge the staged rows into a keyed table, inside the commit's transaction.

The staged rows are deduplicated by key first (pg/dedup.py; the losers go to quarantine in the
same transaction), hard deletes applied, then one strategy's SQL runs. Which SQL, from the
numbers on lineitem SF1 (6M rows, 900k of them changed or new; README, Merge): upsert and
insert-only use `INSERT … ON CONFLICT` fed in key order (15-24 s, against 75-105 s unordered,
90-114 s for `MERGE` and 50 s for delete + insert in key order). It skips an unchanged row
without writing it and counts inserts and updates in the same statement (`xmax = 0` marks a row
it inserted); `MERGE` has no RETURNING before PostgreSQL 17 and meets a concurrent insert of the
same key with a unique violation where ON CONFLICT waits and updates. Killed at any moment, the
transaction rolls back and the table is as it was.

Every other statement that joins the staged rows to the table by key (hard deletes,
delete-insert's delete, scd2) probes the key's index from the staged rows in key order, a
nested loop: then each page of the table and its index is read and written once, in order. The
planner would rather hash, and a hash join visits the table's rows in hash order: on SF1 the
same update wrote 5.6 GB of WAL instead of 1.0 GB, every page written again after each
checkpoint, and took 2.5x as long.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from itertools import pairwise

from psycopg import sql

from ingest.errors_keyed import MergeColumnMissing, MergeKeyMissing
from ingest.pg import dedup
from ingest.pg.db import Conn
from ingest.pg.target import Target, add_lineage, table_exists
from ingest.stages.keys import MergeSpec
from ingest.state import merges

Log = Callable[[str], None]
_I = sql.Identifier
# Sort memory for the merge's transaction: the staged rows are sorted by key (and deduplicated
# by a window over the key); 900k lineitem rows sort in 190 MB, which spilled to temporary
# files at the default 4 MB.
_WORK_MEM = "256MB"
# A table the first merge creates leaves a tenth of each page free, so that a later merge's
# update puts the row's new version on its page (a HOT update: no new index entry, no other page
# written). On SF1 the upsert's server CPU fell from 11.9 to 7.6 s.
_FILLFACTOR = 90


@dataclass(frozen=True)
class MergeCounts:
    """What a merge did to the table's rows, and the load's rows it set aside."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    duplicates: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts by name, for the report."""
        return asdict(self)


_OID = """
select c.oid from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where n.nspname = %s and c.relname = %s and c.relkind in ('r', 'p')
"""
_COLUMNS = """
select attname from pg_catalog.pg_attribute where attrelid = %s and attnum > 0 and not attisdropped
"""
_UNIQUE = """
select array(select a.attname::text from unnest(i.indkey::int2[]) k
             join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = k),
       pg_catalog.pg_get_expr(i.indpred, i.indrelid)
from pg_catalog.pg_index i
where i.indrelid = %s and i.indisunique and i.indisvalid and i.indimmediate
  and i.indexprs is null
"""


def check(conn: Conn, target: Target, spec: MergeSpec) -> None:
    """Refuse, before anything is loaded, a table the merge cannot find keys in.

    A missing table is fine: the first merge creates it, keyed.

    Raises:
        MergeColumnMissing: the table lacks a key column (or scd2's validity columns).
        MergeKeyMissing: no unique index on exactly the key's columns (for scd2: one whose
            predicate is `valid_to IS NULL`, so that only the current version is unique).
    """
    row = conn.execute(_OID, (target.schema, target.table)).fetchone()
    if row is None:
        return
    oid = row[0]
    have = {str(r[0]) for r in conn.execute(_COLUMNS, (oid,)).fetchall()}
    needed = list(spec.keys)
    if spec.strategy == "scd2":
        needed += [spec.valid_from, spec.valid_to]
    missing = [c for c in needed if c not in have]
    if missing:
        fix = (
            "merge into a new table_name, or add the columns (scd2: timestamptz)"
            if spec.strategy == "scd2"
            else "set primary_key to columns the table has"
        )
        raise MergeColumnMissing(target.display, missing, fix)
    where = None
    if spec.strategy == "scd2":
        found = conn.execute("select format('(%%I IS NULL)', %s::text)", (spec.valid_to,))
        where = str((found.fetchone() or ("",))[0])
    for columns, predicate in conn.execute(_UNIQUE, (oid,)).fetchall():
        if isinstance(columns, list) and set(columns) == set(spec.keys) and predicate == where:
            return
    shown = None if where is None else f"{_I(spec.valid_to).as_string(None)} is null"
    raise MergeKeyMissing(target.display, spec.keys, shown)


def apply(
    conn: Conn,
    staging: Target,
    target: Target,
    spec: MergeSpec,
    *,
    started_at: datetime,
    staged_rows: int,
    log: Log,
) -> MergeCounts:
    """Merge the staging table's rows into the target, drop the staging table, record counts.

    Runs in the caller's transaction (the commit's); `staging` has the load's columns, the
    row's place in the file and the lineage columns.

    Returns:
        The counts, also written to the run's row of the ledger in this transaction.

    Raises:
        DuplicateKeys: a key repeats and `on_duplicate` is `fail`.
    """
    clock = [time.monotonic()]
    conn.execute("select set_config('work_mem', %s, true)", (_WORK_MEM,))
    if spec.retire_absent:  # the one join left to the planner: it hashes the staged rows
        conn.execute(sql.SQL("analyze {}").format(staging.ident()))
    duplicates = dedup.dedup(conn, staging, target, spec) if spec.may_repeat else 0
    clock.append(time.monotonic())
    rows = staged_rows - duplicates
    if not table_exists(conn, target):
        counts = _create(conn, staging, target, spec, started_at)
        clock.append(clock[-1])
    else:
        added = add_lineage(conn, target, spec.lineage)
        if added:
            log(f"adding lineage columns {', '.join(added)} to {target.display}")
        deleted, flagged = _hard_delete(conn, staging, target, spec, started_at)
        clock.append(time.monotonic())
        src: sql.Composable = staging.ident()
        if spec.hard_delete:  # the flagged rows asked for a deletion, not to be merged
            src = sql.SQL("(select * from {} where {} is not true)").format(
                staging.ident(), _I(spec.hard_delete)
            )
        counts = _STRATEGIES[spec.strategy](conn, src, target, spec, started_at, rows - flagged)
        counts = replace(counts, deleted=counts.deleted + deleted)
    counts = replace(counts, duplicates=duplicates)
    conn.execute(sql.SQL("drop table {}").format(staging.ident()))
    merges.record_counts(conn, spec.meta, spec.run_id, counts.as_dict())
    clock.append(time.monotonic())
    deduped, deletes, merge = (b - a for a, b in pairwise(clock))
    log(
        f"merged into {target.display}: {counts.inserted:,} inserted, {counts.updated:,} updated,"
        f" {counts.unchanged:,} unchanged, {counts.deleted:,} deleted"
        + (f"; {duplicates:,} duplicate-key rows kept in quarantine" if duplicates else "")
        + f" (dedup {deduped:.1f} s, deletes {deletes:.1f} s, {spec.strategy} {merge:.1f} s)"
    )
    return counts


def _names(names: tuple[str, ...] | list[str], prefix: str = "") -> sql.Composable:
    if prefix:
        return sql.SQL(", ").join(sql.SQL(prefix + ".{}").format(_I(n)) for n in names)
    return sql.SQL(", ").join(map(_I, names))


def _match(spec: MergeSpec) -> sql.Composable:
    return sql.SQL(" and ").join(sql.SQL("t.{k} = s.{k}").format(k=_I(k)) for k in spec.keys)


def _in_key_order(src: sql.Composable, spec: MergeSpec) -> sql.Composable:
    """The staged rows sorted by key (a subquery with ORDER BY keeps its order in a join)."""
    return sql.SQL("(select * from {} s order by {})").format(src, _names(spec.keys))


@contextmanager
def _probing(conn: Conn) -> Iterator[None]:
    """Join by probing the key's index, row by row, until the block ends (see the module doc).

    The settings are the transaction's (`set_config(..., true)`) and set back after the block.
    """
    names = ("enable_hashjoin", "enable_mergejoin")
    found = conn.execute("select current_setting(%s), current_setting(%s)", names).fetchone()
    before = tuple(str(v) for v in (found or ("on", "on")))
    for name in names:
        conn.execute("select set_config(%s, 'off', true)", (name,))
    try:
        yield
    finally:
        for name, value in zip(names, before, strict=True):
            conn.execute("select set_config(%s, %s, true)", (name, value))


def _differs(spec: MergeSpec, other: str) -> sql.Composable:
    """Whether a table row's values differ from the load's (NULLs compare equal)."""
    return sql.SQL("({}) is distinct from ({})").format(
        _names(spec.values, "t"), _names(spec.values, other)
    )


def _create(
    conn: Conn, staging: Target, target: Target, spec: MergeSpec, started_at: datetime
) -> MergeCounts:
    """The first merge: the table is the staged rows (less deletions), keyed."""
    extra: sql.Composable = sql.SQL("")
    if spec.strategy == "scd2":
        extra = sql.SQL(", %(at)s::timestamptz as {}, null::timestamptz as {}").format(
            _I(spec.valid_from), _I(spec.valid_to)
        )
    keep: sql.Composable = sql.SQL("")
    if spec.hard_delete:
        keep = sql.SQL(" where {} is not true").format(_I(spec.hard_delete))
    made = conn.execute(
        sql.SQL(
            "create table {t} with (fillfactor = {ff}) as select {cols}{extra} from {s}{keep}"
        ).format(
            t=target.ident(),
            ff=sql.Literal(_FILLFACTOR),
            cols=_names([*spec.columns, *spec.lineage]),
            extra=extra,
            s=staging.ident(),
            keep=keep,
        ),
        {"at": started_at},
    )
    if spec.strategy == "scd2":
        conn.execute(
            sql.SQL("alter table {} {}").format(
                target.ident(),
                sql.SQL(", ").join(
                    sql.SQL("alter column {} set not null").format(_I(k)) for k in spec.keys
                ),
            )
        )
        conn.execute(
            sql.SQL("create unique index on {} ({}) where {} is null").format(
                target.ident(), _names(spec.keys), _I(spec.valid_to)
            )
        )
    else:
        conn.execute(
            sql.SQL("alter table {} add primary key ({})").format(target.ident(), _names(spec.keys))
        )
    return MergeCounts(inserted=max(made.rowcount, 0))


def _hard_delete(
    conn: Conn, staging: Target, target: Target, spec: MergeSpec, started_at: datetime
) -> tuple[int, int]:
    """Delete (scd2: retire) the keys whose staged row is flagged, in one pass over the rows.

    Returns:
        The table rows deleted or retired, and the staged rows that asked for it.
    """
    if spec.hard_delete is None:
        return 0, 0
    f = {"t": target.ident(), "s": staging.ident(), "on": _match(spec), "keys": _names(spec.keys)}
    f |= {"flag": _I(spec.hard_delete), "to": _I(spec.valid_to)}
    change = sql.SQL(
        "update {t} t set {to} = %(at)s from f s where {on} and t.{to} is null"
        if spec.strategy == "scd2"
        else "delete from {t} t using f s where {on}"
    ).format(**f)
    with _probing(conn):
        row = conn.execute(
            sql.SQL(
                "with f as materialized (select {keys} from {s} where {flag} order by {keys}),"
                " d as ({change} returning 1)"
                " select (select count(*) from d), (select count(*) from f)"
            ).format(change=change, **f),
            {"at": started_at},
        ).fetchone()
    gone, flagged = (int(str(v)) for v in (row or (0, 0)))
    return gone, flagged


def _upsert(
    conn: Conn, src: sql.Composable, target: Target, spec: MergeSpec, at: datetime, rows: int
) -> MergeCounts:
    """New keys insert; changed rows update with this run's lineage; equal rows stay unwritten."""
    cols = _names([*spec.columns, *spec.lineage])
    written = [*spec.values, *spec.lineage]
    if not spec.values:  # nothing but the key: an existing key has nothing to change
        return _insert_only(conn, src, target, spec, at, rows)
    sets = sql.SQL(", ").join(sql.SQL("{c} = excluded.{c}").format(c=_I(c)) for c in written)
    row = conn.execute(
        sql.SQL(
            "with m as (insert into {t} as t ({cols}) select {cols} from {s} s order by {keys}"
            " on conflict ({keys}) do update set {sets} where {differs}"
            " returning (xmax = 0) as fresh)"
            " select count(*) filter (where fresh), count(*) filter (where not fresh) from m"
        ).format(
            t=target.ident(),
            cols=cols,
            s=src,
            keys=_names(spec.keys),
            sets=sets,
            differs=_differs(spec, "excluded"),
        )
    ).fetchone()
    inserted, updated = (int(str(v)) for v in (row or (0, 0)))
    return MergeCounts(inserted, updated, rows - inserted - updated)


def _insert_only(
    conn: Conn, src: sql.Composable, target: Target, spec: MergeSpec, at: datetime, rows: int
) -> MergeCounts:
    """New keys insert; existing keys are left as they are (counted unchanged)."""
    cols = _names([*spec.columns, *spec.lineage])
    done = conn.execute(
        sql.SQL(
            "insert into {t} ({cols}) select {cols} from {s} s order by {keys}"
            " on conflict ({keys}) do nothing"
        ).format(t=target.ident(), cols=cols, s=src, keys=_names(spec.keys))
    )
    inserted = max(done.rowcount, 0)
    return MergeCounts(inserted=inserted, unchanged=rows - inserted)


def _delete_insert(
    conn: Conn, src: sql.Composable, target: Target, spec: MergeSpec, at: datetime, rows: int
) -> MergeCounts:
    """Every table row of a key in the load is replaced by the load's row (counted updated)."""
    f = {"t": target.ident(), "s": src, "on": _match(spec)}
    with _probing(conn):
        gone = conn.execute(
            sql.SQL("delete from {t} t using {o} s where {on}").format(
                o=_in_key_order(src, spec), **f
            )
        )
    cols = _names([*spec.columns, *spec.lineage])
    conn.execute(
        sql.SQL("insert into {t} ({cols}) select {cols} from {s} s order by {keys}").format(
            cols=cols, keys=_names(spec.keys), **f
        )
    )
    replaced = max(gone.rowcount, 0)
    return MergeCounts(inserted=rows - replaced, updated=replaced)


def _scd2(
    conn: Conn, src: sql.Composable, target: Target, spec: MergeSpec, at: datetime, rows: int
) -> MergeCounts:
    """A changed key's current version gets valid_to; a new version (or key) is inserted."""
    f = {"t": target.ident(), "s": src, "o": _in_key_order(src, spec), "on": _match(spec)}
    f |= {"vf": _I(spec.valid_from), "vt": _I(spec.valid_to)}
    closed = 0
    cols = [*spec.columns, *spec.lineage]
    with _probing(conn):
        if spec.values:
            closed = conn.execute(
                sql.SQL(
                    "update {t} t set {vt} = %(at)s from {o} s"
                    " where {on} and t.{vt} is null and {differs}"
                ).format(differs=_differs(spec, "s"), **f),
                {"at": at},
            ).rowcount
        added = conn.execute(
            sql.SQL(
                "insert into {t} ({cols}, {vf}, {vt}) select {scols}, %(at)s, null from {o} s"
                " where not exists (select from {t} t where {on} and t.{vt} is null)"
            ).format(cols=_names(cols), scols=_names(cols, "s"), **f),
            {"at": at},
        ).rowcount
    retired = 0
    if spec.retire_absent:
        retired = conn.execute(
            sql.SQL(
                "update {t} t set {vt} = %(at)s where t.{vt} is null"
                " and not exists (select from {s} s where {on})"
            ).format(**f),
            {"at": at},
        ).rowcount
    return MergeCounts(added - closed, closed, rows - added, retired)


_STRATEGIES = {
    "upsert": _upsert,
    "insert-only": _insert_only,
    "delete-insert": _delete_insert,
    "scd2": _scd2,
}
