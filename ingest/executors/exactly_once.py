"""A partition task that stages its rows exactly once, however often it runs.

`stage_partition` claims `(run_id, partition)`, COPYs the partition's good rows into the run's
staging table, writes its bad rows to quarantine and records its result on the claim, all in
one transaction on its own connection. If that transaction commits, the partition is staged
and a rerun (a retry, a task whose worker died after the commit, a speculative copy, a resumed
run) finds the claim and loads nothing; if it does not, nothing of it stays and a rerun loads
it whole. Its arguments and result are small and picklable, so it can run in another process.

Run-wide checks cannot live in one process's memory when tasks run elsewhere or in another
run (a resumed one), so they are split:

- The bad-row limit: each task stops early once its own bad rows prove the run over the limit
  (its count alone exceeds `max_bad_rows`, or its share of the run's estimated rows exceeds
  `max_bad_fraction`): a bound that never stops a run that would pass. Its bad rows are then
  committed to quarantine on their own, so the user can see them. The coordinator checks the
  summed results exactly before it commits (`check_limit`).
- `unique`: within a partition the task quarantines repeats as one process always did (the
  first row keeps its value). Across partitions the commit asks the staged rows in SQL
  (`group by … having count(*) > 1`, `ingest.pg.staged`) and refuses to commit a repeat, naming
  the column and values: the staged rows of a resumed run's earlier partitions are not in any
  process's memory, and the server sees them all.
- Quarantine rows are written in the task's transaction, after its COPY (one connection cannot
  interleave them): a rerun of the task neither loses nor duplicates them. They wait in memory
  until then, which the bad-row limit bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from ingest.errors import BadRowsOverLimit
from ingest.executors.task import Job, Tally, run_partition, write_rejects
from ingest.pg.commit import PartitionResult
from ingest.pg.copy import StagingCopy
from ingest.pg.db import Conn, connect
from ingest.pg.target import Target
from ingest.runtime.hooks import reached
from ingest.stages import keys
from ingest.stages.partition import Partition
from ingest.stages.remote import Location
from ingest.stages.unique import SeenValues
from ingest.state import claims

# Called after each batch with the partition's COPY (the local executor's progress and easing).
Watch = Callable[[StagingCopy], None]


def stage_partition(url: str, job: Job, part: Partition, staging: Target) -> PartitionResult:
    """Exactly once: claim (job.run_id, part.key), COPY the partition's good rows into
    `staging` (an existing, committed staging table), write its bad rows to quarantine,
    record the result with the claim, commit — all in ONE transaction on its own
    connection. If the claim is already committed, load nothing and return the recorded
    result. Picklable arguments; no console, no shared state; safe to run in another process.

    Raises:
        BadRowsOverLimit: this partition's bad rows alone put the run over its limit; they
            are committed to quarantine, the partition is not staged.
        IngestError: the server refused a value or went away; nothing of the partition stays.
    """
    return stage(url, job, part, staging)


def stage(
    url: str, job: Job, part: Partition, staging: Target, watch: Watch | None = None
) -> PartitionResult:
    """`stage_partition`, with `watch` called after each batch."""
    with connect(url) as conn:
        done = claims.claim(conn, job.meta, job.run_id, part.key)
        if done is not None:
            conn.rollback()
            return done
        rejects = _Rejects(job)
        copy = StagingCopy(
            url,
            conn,
            job.target,
            keys.staged_columns(job.output, job.merge),
            job.run_id,
            workers=1,
            lineage=job.lineage,
            log=_silent,
            within=conn,
            staging=staging,
        )
        try:
            with copy:
                result = run_partition(
                    job,
                    part,
                    task_tally(job, part),
                    copy.send,
                    rejects.keep,
                    _watching(watch, copy),
                )
                copy.close()
        except BadRowsOverLimit:
            conn.rollback()  # the claim and the rows go; the bad rows stay, for the user
            rejects.write(conn)
            conn.commit()
            raise
        rejects.write(conn)
        claims.record(conn, job.meta, job.run_id, result)
        conn.commit()
    reached("partition")  # staged and committed
    return result


def task_tally(job: Job, part: Partition) -> Tally:
    """A task's own counts: its `unique` values sized for its rows, the run's row estimate."""
    share = part.rows if part.rows is not None else job.profile.rows
    watch = keys.KeyWatch(job.merge, share) if job.merge else None
    seen = SeenValues(expected_rows=int(share * 1.1))
    return Tally(job.profile.rows, seen, key_watch=watch)


def _watching(watch: Watch | None, copy: StagingCopy) -> Callable[[], None]:
    if watch is None:
        return lambda: None
    return lambda: watch(copy)


def _silent(message: str) -> None:
    """A task says nothing: what it did travels back in its result."""


@dataclass
class _Rejects:
    """A partition's bad rows, kept until its COPY ends, then written in its transaction."""

    job: Job
    batches: list[tuple[pl.DataFrame, int, Location]] = field(default_factory=list)

    def keep(self, rejects: pl.DataFrame, line_offset: int, path: Location) -> None:
        self.batches.append((rejects, line_offset, path))

    def write(self, conn: Conn) -> None:
        for rejects, line_offset, path in self.batches:
            write_rejects(self.job, conn, rejects, line_offset, path)
        self.batches.clear()
