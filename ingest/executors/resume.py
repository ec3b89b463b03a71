"""Resuming a load: find the staging a dead run left, keep it or clean it, and commit it.

A staged load commits its staging table (empty) before any partition, registered in
`<meta>.staged_runs` with what a later run must match to pick it up: the target, the files'
fingerprint (the ledger's) and the config hash. Each partition then commits on its own with its
claim (`ingest.executors.exactly_once`). A run that dies leaves the table and its claims; the
next run of the same source resumes it when everything matches and its partitions are the same
(same keys), and loads only the missing ones. Anything else a dead run left is dropped, and the
dead run's ledger row says so (`pgloadkit runs`): a changed file or config, `--restart`, or
leftovers older than `database.resume_max_age_hours`.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from psycopg import sql

from ingest.errors import IngestError, RepeatedAcrossPartitions
from ingest.executors.task import Job
from ingest.pg import staging as pg_staging
from ingest.pg.commit import PartitionResult
from ingest.pg.db import Conn
from ingest.pg.staging import staging_table
from ingest.pg.target import Target
from ingest.runtime.hooks import reached
from ingest.stages import keys
from ingest.stages.partition import Partition
from ingest.state import claims
from ingest.state.claims import COLUMN_NAMES, StagedRun

# Loads of at least this many rows (the profile's estimate, over all files) are staged partition
# by partition, each in a transaction of its own, so that a killed one resumes. Smaller ones take
# the one-pass path: all or nothing, and ~10-20% less client CPU (lineitem SF1, 6M rows,
# measured 2026-12-06), which a rerun of a short load costs less than.
RESUMABLE_ROWS = 10_000_000
# Such a load cuts a file into partitions of about this size, each staged (and resumed) whole;
# two are staged at once, so enough of them keep both connections busy to the end.
STAGED_CSV_BYTES = 128 << 20
STAGED_PARQUET_ROWS = 1_000_000

Log = Callable[[str], None]
# Values of a repeated `unique` column named in the refusal.
SHOWN = 5


@dataclass(frozen=True)
class Identity:
    """What a run must share with a dead one to resume it."""

    fingerprint: str  # of all the load's files, in order
    config_hash: str


def fingerprint_of(fingerprints: Sequence[str]) -> str:
    """One fingerprint for a load's files: a single file's own, or a hash of all of them."""
    if len(fingerprints) == 1:
        return fingerprints[0]
    return hashlib.sha256("\n".join(fingerprints).encode()).hexdigest()


def adopt(
    control: Conn,
    job: Job,
    parts: Sequence[Partition],
    identity: Identity,
    *,
    restart: bool,
    max_age_hours: float,
    log: Log,
) -> StagedRun | None:
    """The dead run this one resumes, or None; every other leftover of the target is dropped.

    Call it under the target's lock, before the run is in the ledger: a resumed run keeps the
    dead run's id (its claims, quarantine rows and ledger row are keyed by it).
    """
    claims.ensure_claims(control, job.meta)
    _sweep_old(control, job.meta, max_age_hours, log)
    keys_now = {p.key for p in parts}
    chosen: StagedRun | None = None
    for run in claims.staged_runs(control, job.meta, job.target.display):
        reason = None
        if restart:
            reason = "--restart"
        elif chosen is not None:
            reason = "a newer run's staging is resumed"
        elif run.fingerprint != identity.fingerprint:
            reason = "the file changed since"
        elif run.config_hash != identity.config_hash:
            reason = "the config changed since"
        elif not _exists(control, job.target.schema, run.staging):
            reason = "its staging table is gone"
        elif not set(claims.recorded(control, job.meta, run.run_id)) <= keys_now:
            reason = "the file is cut into other partitions now"
        if reason is None:
            chosen = run
        else:
            drop(control, job.meta, run, reason, log)
    return chosen


def continuing(job: Job, run: StagedRun) -> Job:
    """The job as the dead run's: its id keys the claims, the quarantine and the merge counts."""
    merge = replace(job.merge, run_id=run.run_id) if job.merge is not None else None
    return replace(job, run_id=run.run_id, merge=merge)


def prepare(
    control: Conn,
    job: Job,
    parts: Sequence[Partition],
    identity: Identity,
    resumed: StagedRun | None,
    log: Log,
) -> tuple[Target, dict[str, PartitionResult]]:
    """The run's staging table, created and committed if new, and the partitions staged in it.

    Raises:
        TargetExists: `if_table_exists: fail` and the table is there.
    """
    columns = keys.staged_columns(job.output, job.merge)
    table = staging_table(job.target, job.run_id)
    pg_staging.prepare_target(control, job.target, [*columns, *job.lineage], log, keep=table)
    if resumed is not None:
        done = claims.recorded(control, job.meta, job.run_id)
        log(f"resuming run {job.run_id}: {len(done)} of {len(parts)} partitions already loaded")
        reached("staged")
        return table, done
    with control.transaction():
        control.execute(pg_staging.create_sql(table, columns))
        claims.register(
            control,
            job.meta,
            StagedRun(
                job.run_id,
                job.target.display,
                table.schema,
                table.table,
                identity.fingerprint,
                identity.config_hash,
                len(parts),
                datetime.now(UTC),
            ),
        )
    reached("staged")
    return table, {}


def check_claims(
    conn: Conn, job: Job, parts: Sequence[Partition], results: dict[str, PartitionResult]
) -> None:
    """Refuse to commit unless every partition's claim is committed with the rows it reported.

    Raises:
        IngestError: a partition is not staged, or staged with other counts.
    """
    found = {k: r.rows_sent for k, r in claims.recorded(conn, job.meta, job.run_id).items()}
    wanted = {p.key: results[p.key].rows_sent for p in parts if p.key in results}
    missing = [p.key for p in parts if p.key not in found]
    if missing or len(wanted) != len(parts) or found != wanted:
        raise IngestError(
            f"the load's partitions do not add up (not staged: {missing[:3]}; "
            f"{sum(found.values()):,} rows claimed against {sum(wanted.values()):,} reported);"
            " nothing was changed; run the load again to resume it"
        )


def check_unique(conn: Conn, job: Job, staging: Target) -> None:
    """Refuse a `unique` column whose value repeats across partitions, asking the staged rows.

    Within a partition its task already quarantined the repeats; the server sees all of them.

    Raises:
        RepeatedAcrossPartitions: naming the column and some values.
    """
    for column, check in job.source.validation_data.checks.items():
        if not check.unique:
            continue
        name = sql.Identifier(column)
        rows = conn.execute(
            sql.SQL(
                "select {}::text, count(*) from {} where {} is not null group by {}"
                " having count(*) > 1 limit %s"
            ).format(name, staging.ident(), name, name),
            (SHOWN,),
        ).fetchall()
        if rows:
            values = [str(value) for value, _ in rows]
            raise RepeatedAcrossPartitions(job.place, column, values, job.target.display)


def drop(control: Conn, meta: str, run: StagedRun, reason: str, log: Log) -> None:
    """Drop a dead run's staging and claims, and say so in its ledger row."""
    note = f"staging dropped ({reason})"
    with control.transaction():
        control.execute(
            sql.SQL("drop table if exists {}").format(sql.Identifier(run.schema, run.staging))
        )
        claims.forget(control, meta, run.run_id)
        control.execute(
            sql.SQL(
                "update {}.runs set error = %s || coalesce(': ' || error, '') where run_id = %s"
            ).format(sql.Identifier(meta)),
            (note, run.run_id),
        )
    log(f"dropping the staging of run {run.run_id} on {run.target}: {reason}")


def _sweep_old(control: Conn, meta: str, max_age_hours: float, log: Log) -> None:
    """Drop every target's leftovers older than the age, unless their run is still going."""
    cutoff = datetime.now(UTC) - timedelta(hours=max_age_hours)
    rows = control.execute(
        sql.SQL(
            "select {} from {}.staged_runs s left join {}.runs r using (run_id)"
            " where s.created_at < %s and coalesce(r.status, '') <> 'running'"
        ).format(
            sql.SQL(", ").join(sql.Identifier("s", c) for c in COLUMN_NAMES),
            sql.Identifier(meta),
            sql.Identifier(meta),
        ),
        (cutoff,),
    ).fetchall()
    for row in rows:
        run = StagedRun(*row)  # type: ignore[arg-type]
        drop(control, meta, run, f"older than {max_age_hours:g} h", log)


def reopen_run(control: Conn, meta: str, run_id: str) -> None:
    """The dead run's ledger row is running again, under this process's connection."""
    with control.transaction():
        control.execute(
            sql.SQL(
                "update {}.runs set status = 'running', started_at = now(), finished_at = null,"
                " error = null, backend_pid = pg_backend_pid(), host = %s where run_id = %s"
            ).format(sql.Identifier(meta)),
            (socket.gethostname(), run_id),
        )


def _exists(conn: Conn, schema: str, table: str) -> bool:
    row = conn.execute(
        "select to_regclass(format('%%I.%%I', %s::text, %s::text))", (schema, table)
    ).fetchone()
    return row is not None and row[0] is not None


def resumable(job: Job, files: int) -> bool:
    """Whether a load is long enough to stage by partition, or its source asks for partitions.

    Asked only of a load over several connections: a one-transaction load (`wal_level=minimal`,
    a direct append) cannot resume, its staging table goes with its transaction.
    """
    source = job.source
    asked = source.partition_rows is not None or source.partition_bytes is not None
    return asked or job.profile.rows * files >= RESUMABLE_ROWS
