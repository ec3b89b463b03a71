"""The commit of a load: run once, after every partition is staged, in one transaction.

It checks the partitions' results, then makes the staged rows the target's (replace by a swap,
or append), records the run with them, and commits. Until that COMMIT the target is as it was;
readers see the old table or the new one, never a mix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from ingest.errors import IngestError
from ingest.pg import merge as pg_merge
from ingest.pg import outcome
from ingest.pg.db import Conn, connect
from ingest.pg.staging import Staged
from ingest.pg.swap import replace_table
from ingest.pg.target import Target, add_lineage, table_exists
from ingest.runtime.hooks import reached
from ingest.stages.keys import MergeSpec

Log = Callable[[str], None]


@dataclass(frozen=True)
class PartitionResult:
    """What one partition task did: small, so it travels back from wherever the task ran.

    Attributes:
        key: the partition's key.
        rows_read: rows read from it, good and bad.
        rows_sent: rows sent to the staging table.
        rows_rejected: bad rows kept in the quarantine table.
        blank_lines: empty lines skipped.
        examples: the first bad rows, as one line each.
        checked: rows each check ran on (`validate.split_batch`'s depth).
        seconds: how long it took.
        rows_skipped: rows at or below the incremental cursor's high-water mark.
        cursor_top: the largest cursor value sent, if any.
    """

    key: str
    rows_read: int
    rows_sent: int
    rows_rejected: int
    blank_lines: int = 0
    examples: tuple[str, ...] = ()
    checked: tuple[tuple[str, int], ...] = ()
    seconds: float = 0.0
    rows_skipped: int = 0
    cursor_top: Any = None


@dataclass(frozen=True)
class Commit:
    """What the commit needs besides the staged rows.

    Attributes:
        url: the database (a new connection commits when there is no held transaction).
        control: the connection holding the table's lock; it must still be alive to commit.
        target: where the rows go.
        columns: the loaded columns, in order (the lineage columns come on top).
        lineage: the names of the load-time and run-id columns.
        before: called in the transaction before rows reach the target (drift evolution).
        on_commit: called in the transaction last (ledger, schema history).
        committed: whether `on_commit`'s rows are in, asked over a new connection when the
            connection dropped as COMMIT was sent.
        log: where to say what happened.
        merge: for `if_table_exists: merge`, how the staged rows meet the table's by key.
    """

    url: str
    control: Conn
    target: Target
    columns: tuple[str, ...]
    lineage: tuple[str, str]
    before: Callable[[Conn], None] | None
    on_commit: Callable[[Conn], None] | None
    committed: Callable[[Conn], bool] | None
    log: Log
    merge: MergeSpec | None = None


def check_results(
    expected: Sequence[str], results: Sequence[PartitionResult], staged_rows: int
) -> None:
    """Refuse to commit unless every partition reported once and the counts add up.

    The rows the staging connections sent must be the rows the tasks said they sent: a task
    lost or run twice shows here, before the target is touched.

    Raises:
        IngestError: a partition is missing or repeated, or the counts disagree.
    """
    keys = [r.key for r in results]
    missing = [k for k in expected if k not in keys]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    sent = sum(r.rows_sent for r in results)
    if missing or repeated or sent != staged_rows:
        raise IngestError(
            f"the load's partitions do not add up (missing {missing[:3]}, repeated "
            f"{repeated[:3]}, {sent:,} rows reported against {staged_rows:,} staged); nothing "
            "was changed; run the load again"
        )


def commit(staged: Staged, spec: Commit) -> int:
    """Make the staged rows the target's in one transaction, and commit it.

    Returns:
        Rows committed.

    Raises:
        ServerGone: the lock's connection or the server went away before the commit, or the
            commit did not happen; the target is unchanged.
        CommitUnknown: the commit's outcome could not be found out.
    """
    if staged.direct:
        assert staged.held is not None
        # DDL from `before` would have to precede the COPY, and lock readers out all along:
        # the executor stages whenever there is some.
        assert spec.before is None, "a direct append leaves the columns as they are"
        with staged.held as conn:
            if spec.on_commit is not None:
                spec.on_commit(conn)
            _commit(conn, staged, spec)
        return staged.rows
    with staged.held or connect(spec.url) as conn:
        _stamp(conn, staged, spec.lineage)
        if spec.before is not None:
            spec.before(conn)
        if spec.merge is not None:  # its counts go to the run's ledger row, in this transaction
            pg_merge.apply(
                conn,
                staged.table,
                spec.target,
                spec.merge,
                started_at=staged.started_at,
                staged_rows=staged.rows,
                log=spec.log,
            )
        elif spec.target.if_exists == "append" and table_exists(conn, spec.target):
            _append(conn, staged, spec)
        else:
            replace_table(conn, staged.table, spec.target, spec.log)
        if spec.on_commit is not None:
            spec.on_commit(conn)
        _commit(conn, staged, spec)
    return staged.rows


def _stamp(conn: Conn, staged: Staged, lineage: tuple[str, str]) -> None:
    """Give every staged row the run's start and id, without rewriting a row.

    A column added with a constant default is stored once in the catalogue (PostgreSQL's fast
    default); dropping the defaults keeps them from stamping later inserts.
    """
    loaded_at, run_id = lineage
    conn.execute(
        sql.SQL(
            "alter table {} add column {} timestamptz not null default {}::timestamptz,"
            " add column {} uuid not null default {}::uuid"
        ).format(
            staged.table.ident(),
            sql.Identifier(loaded_at),
            sql.Literal(staged.started_at.isoformat()),
            sql.Identifier(run_id),
            sql.Literal(staged.run_id),
        )
    )
    conn.execute(
        sql.SQL("alter table {} alter column {} drop default, alter column {} drop default").format(
            staged.table.ident(), sql.Identifier(loaded_at), sql.Identifier(run_id)
        )
    )


def _append(conn: Conn, staged: Staged, spec: Commit) -> None:
    added = add_lineage(conn, spec.target, spec.lineage)
    if added:
        spec.log(
            f"adding lineage columns {', '.join(added)} to {spec.target.display};"
            " the rows already there keep NULL in them"
        )
    cols = sql.SQL(", ").join(map(sql.Identifier, [*spec.columns, *spec.lineage]))
    conn.execute(
        sql.SQL("insert into {} ({}) select {} from {}").format(
            spec.target.ident(), cols, cols, staged.table.ident()
        )
    )
    conn.execute(sql.SQL("drop table {}").format(staged.table.ident()))


def _commit(conn: Conn, staged: Staged, spec: Commit) -> None:
    """Commit, and when the connection drops at COMMIT, find out whether it went through.

    The control connection holds the table's lock: if it is gone, another run may hold the
    lock now, so nothing is committed.
    """
    spec.control.execute("select 1")
    reached("swapping")
    outcome.commit(
        conn,
        spec.control,
        spec.url,
        spec.target.display,
        spec.committed,
        lambda went: spec.log(f"{went}: {staged.rows:,} rows are in {spec.target.display}"),
        f"run {staged.run_id} in the ledger's files table",
    )
