"""The keyed part of a run: plan a merge and a cursor, check them, record what they did.

`run.py` calls these at four points; the SQL is in `pg/merge.py` and `state/merges.py`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import psycopg

from ingest.errors import IngestError
from ingest.executors.local import Log
from ingest.executors.task import Job
from ingest.pg import merge as pg_merge
from ingest.pg.db import Conn, ensure_live
from ingest.runtime.secrets import scrub
from ingest.stages import incremental, keys
from ingest.state import merges


def plan(job: Job) -> Job:
    """The job with its merge and cursor, checked against the file's columns (no I/O).

    Raises:
        ConfigError: a key, sort, delete or cursor column the file lacks or cannot use.
    """
    cursor = incremental.plan_cursor(job.config.path, job.source, job.output, job.profile.path)
    return replace(job, merge=_plan_merge(job), cursor=cursor)


def prepare(control: Conn, job: Job, log: Log) -> Job:
    """Merges and cursors: check the target's key, and read the cursor's high-water mark."""
    if job.merge is None and job.cursor is None:
        return job
    merges.ensure(control, job.meta)
    if job.merge is not None:
        pg_merge.check(control, job.target, job.merge)
    if job.cursor is None:
        return job
    mark = merges.high_water(
        control, job.meta, job.source.name, job.target.display, job.cursor.column
    )
    if mark is not None:
        log(f"skipping rows with {job.cursor.column} at or below {mark}")
    return replace(job, cursor=replace(job.cursor, high_water=mark))


def merge_counts(job: Job, control: Conn, url: str, status: str, log: Log) -> dict[str, int]:
    """A committed merge's counts, read back from the ledger row its transaction wrote."""
    if job.merge is None or status != "success":
        return {}
    try:
        conn = ensure_live(control, url)
        try:
            return merges.read_counts(conn, job.meta, job.run_id)
        finally:
            if conn is not control:
                conn.close()
    except (psycopg.Error, IngestError) as exc:
        reason = scrub(str(exc).splitlines()[0], [url])
        log(f"the merge committed; its counts are in {job.meta}.runs ({reason})")
        return {}


def record_cursor(conn: Conn, job: Job, skipped: int, top: Any) -> None:
    """In the commit's transaction: the rows skipped, and the cursor's new high-water mark."""
    if job.cursor is None:
        return
    merges.record_counts(conn, job.meta, job.run_id, {"skipped": skipped})
    if top is not None:
        merges.record_high_water(
            conn,
            job.meta,
            source=job.source.name,
            target=job.target.display,
            column=job.cursor.column,
            pg_type=job.cursor.pg_type,
            value=top,
            run_id=job.run_id,
        )


def _plan_merge(job: Job) -> keys.MergeSpec | None:
    return keys.plan_merge(
        job.config.path,
        job.source,
        job.output,
        lineage=job.lineage,
        file=job.profile.path,
        fmt=job.profile.format,
        schema=job.target.schema,
        run_id=job.run_id,
        meta=job.meta,
    )
