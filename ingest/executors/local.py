"""The local executor: run a load's partition tasks in this process, then commit once.

Reading, encoding and COPY overlap on threads (`ingest.pg.copy.StagingCopy`), and the tasks run
one after another into the same staging table, so the run-wide `unique` check and bad-row limit
are exact and in memory. Memory is watched as the batches go: near the budget the encoder's
pieces shrink, and the queue drains.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from rich.console import Console

from ingest.errors import ValueRefused
from ingest.executors.task import Job, Tally, quarantine_now, run_partition
from ingest.pg import commit
from ingest.pg.copy import MIN_PIECE_BYTES, StagingCopy
from ingest.pg.db import Conn
from ingest.runtime.easing import EasingNotes
from ingest.runtime.memory import RssWatch
from ingest.runtime.progress import LoadProgress
from ingest.runtime.timeline import LoadPhases, Timeline
from ingest.stages import incremental, keys
from ingest.stages.partition import Partition
from ingest.stages.profile import FileProfile
from ingest.state.refusal import RowRefused

Log = Callable[[str], None]
# Share of the budget at which the run starts trading speed for memory.
PRESSURE = 0.85
HARD_PRESSURE = 0.95


@dataclass
class Counts:
    """What the run has done so far, for the report and the ledger."""

    read: int = 0
    loaded: int = 0
    rejected: int = 0
    blank_lines: int = 0
    drained_at: int = 0
    depth: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: int = 0  # rows at or below the incremental cursor's high-water mark
    cursor_top: Any = None  # the largest cursor value loaded
    drift: list[str] = field(default_factory=list)
    easing: EasingNotes | None = None


@dataclass(frozen=True)
class Session:
    """The run's live resources: connection, memory watch, console."""

    url: str
    control: Conn
    watch: RssWatch
    console: Console
    log: Log
    started: float
    progress: bool
    force: bool
    timeline: Timeline | None = None
    restart: bool = False  # drop a killed run's staged partitions instead of resuming it


@dataclass(frozen=True)
class Hooks:
    """What the caller runs inside the commit's transaction (see `ingest.pg.commit.Commit`)."""

    on_commit: Callable[[Conn], None]
    before: Callable[[Conn], None] | None = None
    committed: Callable[[Conn], bool] | None = None


def load(job: Job, env: Session, parts: list[Partition], counts: Counts, hooks: Hooks) -> None:
    """Run every partition's task, check their results, then commit them in one transaction.

    Raises:
        IngestError: a task or the commit failed; the target is as it was.
    """
    tally = Tally.for_job(job)
    copy = StagingCopy(
        env.url,
        env.control,
        job.target,
        keys.staged_columns(job.output, job.merge),
        job.run_id,
        workers=job.plan.workers or 2,
        lineage=job.lineage,
        into_target=hooks.before is None,
        log=env.log,
    )
    results: list[commit.PartitionResult] = []
    progress = LoadProgress(env.console, job.profile.rows, job.plan.budget_bytes, env.progress)
    phases = LoadPhases(env.timeline, lambda: copy.progress.rows)
    try:
        with frozen_heap(), copy, progress as shown, phases:

            def after_batch() -> None:
                shown.update(copy.progress.rows, copy.progress.bytes, env.watch.latest)
                if env.watch.latest > PRESSURE * job.plan.budget_bytes:
                    ease(job, env, counts, copy)

            keep = quarantine_now(job, env.control)
            for part in parts:
                results.append(run_partition(job, part, tally, copy.send, keep, after_batch))
                add_result(counts, results[-1])
            over = tally.over(job, final=True)
            if over is not None:
                raise over
            notes(job, env, counts)
            staged = copy.close()
            phases.copied()
            commit.check_results([p.key for p in parts], results, staged.rows)
            spec = commit.Commit(
                env.url,
                env.control,
                job.target,
                tuple(job.output),
                job.lineage,
                hooks.before,
                hooks.on_commit,
                hooks.committed,
                env.log,
                _merge(job, tally),
            )
            counts.loaded = commit.commit(staged, spec)
    except RowRefused as exc:
        raise located(exc, job.profile, job.target.display) from exc
    finally:
        sum_up_easing(counts, env.log)


def add_result(counts: Counts, result: commit.PartitionResult) -> None:
    counts.read += result.rows_read
    counts.rejected += result.rows_rejected
    counts.blank_lines += result.blank_lines
    counts.skipped += result.rows_skipped
    counts.cursor_top = incremental.higher(counts.cursor_top, result.cursor_top)
    depth = Counter(counts.depth)
    depth.update(dict(result.checked))
    counts.depth = dict(depth)


def _merge(job: Job, tally: Tally) -> keys.MergeSpec | None:
    """The job's merge; with no key seen twice by the tasks, it skips its dedup pass."""
    if job.merge is None or tally.key_watch is None:
        return job.merge
    return replace(job.merge, may_repeat=tally.key_watch.repeated)


def notes(job: Job, env: Session, counts: Counts) -> None:
    if counts.blank_lines:
        note = f"skipped {counts.blank_lines:,} empty line(s) of {job.profile.path.name}"
        env.log(note)
        counts.notes.append(note)
    if counts.rejected:
        note = f"{counts.rejected:,} bad row(s) kept in {job.quarantine.display}"
        env.log(note)
        counts.notes.append(note)


def sum_up_easing(counts: Counts, log: Log) -> None:
    """One line for all of a run's easing, kept in its notes (and said, if it eased twice)."""
    easing = counts.easing
    summary = easing.summary() if easing is not None else None
    if easing is not None and summary is not None:
        if easing.easings > 1:  # a single easing was said as it happened
            log(summary)
        counts.notes.append(summary)


def located(exc: RowRefused, profile: FileProfile, table: str) -> ValueRefused:
    """The server's refusal, named the way the user finds the row (as quarantine does)."""
    if exc.row is None:
        where = f"COPY line {exc.line:,} (its row in the file was not kept)"
    elif profile.format == "csv":
        where = f"line {exc.row + exc.line_offset:,}"
    else:
        where = f"row {exc.row:,}"
    return ValueRefused(profile.path, where, exc.column, exc.reason, table)


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects that exist before the load out of the garbage collector's full passes.

    polars, pyarrow, pandera and pydantic leave hundreds of thousands of objects; each full
    collection during a long load walked them all (measured: 2.5% of a streaming load's CPU).
    Garbage made during the load is still collected; unfreezing hands the rest back.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def ease(job: Job, env: Session, counts: Counts, copy: StagingCopy) -> None:
    """Memory nears the budget: trade speed for memory, and say so (`EasingNotes` rations it).

    Past 85% of the budget the pieces shrink. Past 95% the queue also drains before the next
    batch is read, but only when RSS has set a new high since the last drain: allocators keep
    freed pages, so RSS stays up after a drain, and draining every batch would only stall the
    load (measured: 4x slower) without lowering it.
    """
    rss, budget = env.watch.latest, job.plan.budget_bytes
    drain = rss > HARD_PRESSURE * budget and rss > counts.drained_at + budget // 100
    if copy.piece_bytes <= MIN_PIECE_BYTES and not drain:
        return
    piece = copy.ease(drain)
    if drain:
        counts.drained_at = rss
    counts.easing = counts.easing or EasingNotes(budget)
    note = counts.easing.eased(rss, piece, drain)
    if note is not None:
        env.log(note)
