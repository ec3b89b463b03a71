"""Partition claims: which partitions of a run are staged, committed with their rows.

A task claims `(run_id, partition)` first, in the transaction that then COPYs the partition's
rows and writes its bad rows, and records its result on the claim before it commits. So a
committed claim means the rows are staged, and a task run twice finds the claim and loads
nothing. A concurrent duplicate's `INSERT … ON CONFLICT DO NOTHING` waits on the uncommitted
claim, then sees it (if it committed) or takes it (if it rolled back).

`staged_runs` names each run whose staging table was committed up front, with what a later run
must match to resume it: the target, the files' fingerprint and the config hash.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, LiteralString

from psycopg import sql

from ingest.pg.commit import PartitionResult
from ingest.pg.db import Conn
from ingest.state.tables import create_tables

_CREATE_LOCK_KEY = 0x70676C6B636C6169  # "pglkclai": serialises concurrent creation
_DDL: tuple[LiteralString, ...] = (
    """create table if not exists {schema}.partitions (
        run_id text not null, partition text not null, rows_sent bigint, rows_rejected bigint,
        result jsonb, staged_at timestamptz, primary key (run_id, partition))""",
    """create table if not exists {schema}.staged_runs (
        run_id text primary key, target text not null, schema text not null,
        staging text not null,
        fingerprint text not null, config_hash text not null, partitions int not null,
        created_at timestamptz not null default now())""",
)


@dataclass(frozen=True)
class StagedRun:
    """A run whose staging table is committed and may be resumed."""

    run_id: str
    target: str  # as displayed, to match
    schema: str  # of the target and its staging table
    staging: str
    fingerprint: str
    config_hash: str
    partitions: int
    created_at: datetime


COLUMN_NAMES = (
    "run_id",
    "target",
    "schema",
    "staging",
    "fingerprint",
    "config_hash",
    "partitions",
    "created_at",
)
COLUMNS = sql.SQL(", ").join(map(sql.Identifier, COLUMN_NAMES))


def ensure_claims(conn: Conn, schema: str) -> None:
    """Create the claims tables in the metadata schema if missing; safe when processes race."""
    with conn.transaction():
        create_tables(conn, schema, _CREATE_LOCK_KEY, _DDL)


def claim(conn: Conn, schema: str, run_id: str, key: str) -> PartitionResult | None:
    """Claim a partition in the caller's transaction; None when it is now ours to load.

    Returns:
        The result recorded by the task that committed the claim before, or None.
    """
    taken = conn.execute(
        sql.SQL(
            "insert into {}.partitions (run_id, partition) values (%s, %s)"
            " on conflict do nothing returning partition"
        ).format(sql.Identifier(schema)),
        (run_id, key),
    ).fetchone()
    if taken is not None:
        return None
    row = conn.execute(
        sql.SQL("select result from {}.partitions where run_id = %s and partition = %s").format(
            sql.Identifier(schema)
        ),
        (run_id, key),
    ).fetchone()
    assert row is not None and row[0] is not None, "a committed claim always has its result"
    return from_json(row[0])


def record(conn: Conn, schema: str, run_id: str, result: PartitionResult) -> None:
    """Write a task's result on its claim, in the task's transaction."""
    conn.execute(
        sql.SQL(
            "update {}.partitions set rows_sent = %s, rows_rejected = %s, result = %s::jsonb,"
            " staged_at = now() where run_id = %s and partition = %s"
        ).format(sql.Identifier(schema)),
        (result.rows_sent, result.rows_rejected, to_json(result), run_id, result.key),
    )


def recorded(conn: Conn, schema: str, run_id: str) -> dict[str, PartitionResult]:
    """The committed results of a run's partitions, by partition key."""
    rows = conn.execute(
        sql.SQL("select partition, result from {}.partitions where run_id = %s").format(
            sql.Identifier(schema)
        ),
        (run_id,),
    ).fetchall()
    return {str(key): from_json(result) for key, result in rows}


def register(conn: Conn, schema: str, run: StagedRun) -> None:
    """Name a run's staging table as resumable, in the transaction that creates it."""
    conn.execute(
        sql.SQL(
            "insert into {}.staged_runs (run_id, target, schema, staging, fingerprint,"
            " config_hash, partitions) values (%s, %s, %s, %s, %s, %s, %s)"
        ).format(sql.Identifier(schema)),
        (
            run.run_id,
            run.target,
            run.schema,
            run.staging,
            run.fingerprint,
            run.config_hash,
            run.partitions,
        ),
    )


def staged_runs(conn: Conn, schema: str, target: str) -> list[StagedRun]:
    """The resumable runs of a target, newest first."""
    rows = conn.execute(
        sql.SQL("select {} from {}.staged_runs where target = %s order by created_at desc").format(
            COLUMNS, sql.Identifier(schema)
        ),
        (target,),
    ).fetchall()
    return [StagedRun(*row) for row in rows]  # type: ignore[arg-type]


def forget(conn: Conn, schema: str, run_id: str) -> None:
    """Drop a run's claims and its resumable entry, in the caller's transaction."""
    ident = sql.Identifier(schema)
    conn.execute(sql.SQL("delete from {}.partitions where run_id = %s").format(ident), (run_id,))
    conn.execute(sql.SQL("delete from {}.staged_runs where run_id = %s").format(ident), (run_id,))


def to_json(result: PartitionResult) -> str:
    """A result as JSON; the cursor's largest value keeps its type."""
    fields = asdict(result)
    fields["cursor_top"] = _tagged(result.cursor_top)
    return json.dumps(fields)


def from_json(value: Any) -> PartitionResult:
    """The result `to_json` wrote (psycopg hands jsonb over already parsed)."""
    fields = dict(json.loads(value) if isinstance(value, str) else value)
    fields["examples"] = tuple(fields["examples"])
    fields["checked"] = tuple((str(name), int(n)) for name, n in fields["checked"])
    fields["cursor_top"] = _untagged(fields["cursor_top"])
    return PartitionResult(**fields)


# Cursor types JSON lacks, by tag; datetime before date, since a datetime is a date too.
_KINDS: tuple[tuple[str, type, Any], ...] = (
    ("datetime", datetime, datetime.fromisoformat),
    ("date", date, date.fromisoformat),
    ("time", time, time.fromisoformat),
    ("decimal", Decimal, Decimal),
)


def _tagged(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    for tag, kind, _ in _KINDS:
        if isinstance(value, kind) and isinstance(value, datetime | date | time):
            return {tag: value.isoformat()}
    return value


def _untagged(value: Any) -> Any:
    if isinstance(value, dict):
        [(tag, text)] = value.items()
        return next(parse for name, _, parse in _KINDS if name == tag)(text)
    return value
