"""The task of one partition: read, cast and check its rows, quarantine the bad, stage the good.

A task never touches the target table: it sends rows to the run's staging table and returns a
small `PartitionResult`. The run-wide parts it needs (the values a `unique` check has seen, the
bad rows counted so far) come in a `Tally`, which the local executor shares between the tasks
it runs in its own process; the commit adds the results up once more before it commits.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ingest.config import PipelineConfig, SourceConfig, is_glob
from ingest.errors import BadRowsOverLimit
from ingest.pg.commit import PartitionResult
from ingest.pg.db import Conn
from ingest.pg.target import Target
from ingest.stages import cast, incremental, keys, read, remote, validate
from ingest.stages.partition import Partition
from ingest.stages.plan import Plan
from ingest.stages.profile import FileProfile
from ingest.stages.remote import Location, RemoteFile
from ingest.stages.unique import SeenValues
from ingest.state import quarantine

# Bad rows shown in a failure's message, over the whole run.
EXAMPLES = 5


@dataclass(frozen=True)
class Job:
    """Everything the load of one source needs, resolved before any row moves; picklable."""

    config: PipelineConfig
    source: SourceConfig
    profile: FileProfile
    plan: Plan
    casts: cast.CastPlan
    output: dict[str, pl.DataType]
    target: Target
    run_id: str
    merge: keys.MergeSpec | None = None
    cursor: incremental.Cursor | None = None

    @property
    def lineage(self) -> tuple[str, str]:
        return (self.config.database.loaded_at_column, self.config.database.run_id_column)

    @property
    def many_files(self) -> bool:
        """Whether the source is a glob, whose partitions may come from several files."""
        return is_glob(self.source.input_path)

    @property
    def place(self) -> Location | str:
        """The input a run-wide error names: the file, or the glob (not its first match)."""
        given = self.source.input_path
        if not self.many_files:
            return self.profile.path
        return given if remote.is_remote(given) else str(self.config.input_file(self.source))

    @property
    def meta(self) -> str:
        return self.config.database.metadata_schema

    @property
    def quarantine(self) -> Target:
        """The table the source's bad rows go to."""
        schema, table = quarantine.quarantine_table(
            self.config.database.schema_, self.source.table_name
        )
        return Target(schema, table, "append")


@dataclass
class Tally:
    """What the tasks of one run have counted together, so a limit stops the run at once."""

    expected_rows: int
    seen: SeenValues
    rows_read: int = 0
    rejected: int = 0
    examples: list[str] = field(default_factory=list)
    key_watch: keys.KeyWatch | None = None  # a merge's keys, to tell whether one repeats

    @classmethod
    def for_job(cls, job: Job) -> Tally:
        rows = job.profile.rows
        watch = keys.KeyWatch(job.merge, rows) if job.merge else None
        return cls(rows, SeenValues(expected_rows=int(rows * 1.1)), key_watch=watch)

    def over(self, job: Job, final: bool) -> BadRowsOverLimit | None:
        """The error to stop with, when the bad rows pass the limit.

        The count limit is exact at any point; the fraction uses the profile's estimate of the
        rows until the last partition is read (`final`).
        """
        total = self.rows_read if final else max(self.expected_rows, self.rows_read)
        limit = validate.over_limit(self.rejected, total, job.source.validation_data)
        if limit is None:
            return None
        shown = job.quarantine.display
        return BadRowsOverLimit(job.place, self.rejected, limit, self.examples, shown)


Send = Callable[[pl.DataFrame, np.ndarray, int], None]
# Keeps a batch's bad rows (as `validate.split_batch` makes them), their line offset and the
# file they came from (a glob's partitions span several).
Keep = Callable[[pl.DataFrame, int, Location], None]


def run_partition(
    job: Job,
    part: Partition,
    tally: Tally,
    send: Send,
    keep_rejects: Keep,
    after_batch: Callable[[], None] = lambda: None,
) -> PartitionResult:
    """Load one partition's rows into the staging table through `send`.

    Args:
        job: the load.
        part: which rows.
        tally: the run's shared counts and `unique` values.
        send: stages a batch of good rows (their file row indexes, and the line offset).
        keep_rejects: writes a batch's bad rows to quarantine (see `quarantine_now`).
        after_batch: called after each batch (progress, memory).

    Raises:
        BadRowsOverLimit: the run's bad rows passed the limit; nothing is committed.
    """
    started = time.monotonic()
    profile, validation = job.profile, job.source.validation_data
    schema = job.casts.read_schema(profile.schema)
    read_rows = sent = rejected = blank = skipped = 0
    top = None
    depth: Counter[str] = Counter()
    examples: list[str] = []
    for number, chunk in enumerate(read.batches(part, job.source.csv, schema, job.plan)):
        out = validate.split_batch(
            chunk.frame,
            job.casts,
            schema,
            validation,
            seed=part.index * 100_003 + number,  # a rerun samples the same rows
            seen=tally.seen,
            source=part.path,
            nul_free=chunk.nul_free,
        ).with_rejects(chunk.rejects)
        if chunk.unparsed is not None:  # lines that are not records: bad rows too
            out = out.with_rejects(chunk.unparsed)
        read_rows += chunk.rows_read
        tally.rows_read += chunk.rows_read
        blank += chunk.skipped
        depth.update(out.checked_rows)
        offset = chunk.first_line - chunk.first_row
        if out.bad_rows:
            keep_rejects(out.rejects, offset, part.path)
            found = quarantine.format_examples(
                out.rejects, profile.format, EXAMPLES, line_offset=offset
            )
            if job.many_files:  # say which file each line is in
                found = [f"{_name(part.path)}: {e}" for e in found]
            examples += found[: EXAMPLES - len(examples)]
            tally.examples += found[: EXAMPLES - len(tally.examples)]
            rejected += out.bad_rows
            tally.rejected += out.bad_rows
            over = tally.over(job, final=False)
            if over is not None:
                raise over
        kept = incremental.keep(job.cursor, out.good, out.rows)
        skipped, top = skipped + kept.skipped, incremental.higher(top, kept.top)
        if tally.key_watch is not None:
            tally.key_watch.see(kept.good)
        rows = kept.rows.to_numpy()
        send(keys.numbered(kept.good, rows, offset, job.merge), rows, offset)
        sent += kept.good.height
        after_batch()
    return PartitionResult(
        key=part.key,
        rows_read=read_rows,
        rows_sent=sent,
        rows_rejected=rejected,
        blank_lines=blank,
        examples=tuple(examples),
        checked=tuple(sorted(depth.items())),
        seconds=time.monotonic() - started,
        rows_skipped=skipped,
        cursor_top=top,
    )


def quarantine_now(job: Job, conn: Conn) -> Keep:
    """Bad rows written over `conn` as they come: autocommit, or the caller's transaction."""

    def keep(rejects: pl.DataFrame, line_offset: int, path: Location) -> None:
        write_rejects(job, conn, rejects, line_offset, path)

    return keep


def write_rejects(
    job: Job, conn: Conn, rejects: pl.DataFrame, line_offset: int, path: Location
) -> None:
    """A batch of `path`'s bad rows into the source's quarantine table, over `conn`."""
    quarantine.write_rejects(
        conn,
        job.config.database.schema_,
        job.source.table_name,
        job.run_id,
        str(path),
        job.profile.format,
        rejects,
        line_offset=line_offset,
        alone=conn.autocommit,
    )


def _name(path: Location) -> str:
    return path.display if isinstance(path, RemoteFile) else path.name
