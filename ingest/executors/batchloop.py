"""The batch loop of one load: read, cast and check, quarantine bad rows, stream the good ones.

`run` resolves a `Job` (what to load and how) and a `Session` (the live connection, memory
watch and console), then calls `load_batches`, which commits through the `Loader` or raises with
the target untouched.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import polars as pl
from rich.console import Console

from ingest.config import PipelineConfig, SourceConfig
from ingest.errors import BadRowsOverLimit, ValueRefused
from ingest.executors.local import MIN_PIECE_BYTES, Loader
from ingest.pg.target import Conn, Target
from ingest.runtime.memory import RssWatch
from ingest.runtime.progress import LoadProgress
from ingest.stages import cast, read, validate
from ingest.stages.plan import Plan
from ingest.stages.profile import FileProfile
from ingest.stages.unique import SeenValues
from ingest.state import quarantine
from ingest.state.refusal import RowRefused

Log = Callable[[str], None]
# Share of the budget at which the run starts trading speed for memory.
PRESSURE = 0.85
HARD_PRESSURE = 0.95


@dataclass
class Counts:
    """What the batch loop has done so far, for the report and the ledger."""

    read: int = 0
    loaded: int = 0
    rejected: int = 0
    blank_lines: int = 0
    eased_to: int = 0
    drained_at: int = 0
    depth: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Job:
    """Everything the load of one source needs, resolved before any row moves."""

    config: PipelineConfig
    source: SourceConfig
    profile: FileProfile
    plan: Plan
    casts: cast.CastPlan
    output: dict[str, pl.DataType]
    target: Target
    run_id: str

    @property
    def lineage(self) -> tuple[str, str]:
        return (self.config.database.loaded_at_column, self.config.database.run_id_column)

    @property
    def meta(self) -> str:
        return self.config.database.metadata_schema


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


def load_batches(
    job: Job,
    env: Session,
    counts: Counts,
    on_commit: Callable[[Conn], None],
    before: Callable[[Conn], None] | None = None,
    committed: Callable[[Conn], bool] | None = None,
) -> None:
    """Read, cast and check batches, quarantine bad rows, stream good ones, then commit.

    `before` runs in the commit's transaction before the rows reach the target (schema
    evolution), `on_commit` last in it (ledger and schema history); `committed` tells, over a
    new connection, whether what `on_commit` wrote is in (when the commit's answer was lost).
    """
    profile, source, db = job.profile, job.source, job.config.database
    validation = source.validation_data
    seen = SeenValues(expected_rows=int(profile.rows * 1.1))
    q_schema, q_table = quarantine.quarantine_table(db.schema_, source.table_name)
    q_display = Target(q_schema, q_table, "append").display
    examples: list[str] = []
    depth: Counter[str] = Counter()
    loader = Loader(
        env.url,
        env.control,
        job.target,
        job.output,
        job.run_id,
        workers=job.plan.workers or 2,  # resolved from the server on connecting
        lineage=job.lineage,
        into_target=before is None,
        log=env.log,
    )
    schema = job.casts.read_schema(profile.schema)
    chunks = read.batches(profile.path, profile.format, source.csv, schema, job.plan)
    try:
        with (
            _frozen_heap(),
            loader,
            LoadProgress(env.console, profile.rows, job.plan.budget_bytes, env.progress) as shown,
        ):
            for number, chunk in enumerate(chunks):
                out = validate.split_batch(
                    chunk.frame,
                    job.casts,
                    schema,
                    validation,
                    seed=number,
                    seen=seen,
                    source=profile.path,
                    nul_free=chunk.nul_free,
                ).with_rejects(chunk.rejects)
                counts.read += chunk.frame.height
                counts.blank_lines += chunk.skipped
                depth.update(out.checked_rows)
                if out.bad_rows:
                    offset = chunk.first_line - chunk.first_row
                    quarantine.write_rejects(
                        env.control,
                        db.schema_,
                        source.table_name,
                        job.run_id,
                        str(profile.path),
                        profile.format,
                        out.rejects,
                        line_offset=offset,
                    )
                    if len(examples) < 5:
                        examples += quarantine.format_examples(
                            out.rejects, profile.format, 5 - len(examples), line_offset=offset
                        )
                    counts.rejected += out.bad_rows
                    # The count limit is exact now; the fraction uses the estimate until the end.
                    limit = validate.over_limit(
                        counts.rejected, max(profile.rows, counts.read), validation
                    )
                    if limit:
                        raise BadRowsOverLimit(
                            profile.path, counts.rejected, limit, examples, q_display
                        )
                loader.send(out.good, out.rows.to_numpy(), chunk.first_line - chunk.first_row)
                shown.update(loader.progress.rows, loader.progress.bytes, env.watch.latest)
                if env.watch.latest > PRESSURE * job.plan.budget_bytes:
                    _ease(job, env, counts, loader)
            limit = validate.over_limit(counts.rejected, counts.read, validation)
            if limit:
                raise BadRowsOverLimit(profile.path, counts.rejected, limit, examples, q_display)
            if counts.blank_lines:
                note = f"skipped {counts.blank_lines:,} empty line(s) of {profile.path.name}"
                env.log(note)
                counts.notes.append(note)
            if counts.rejected:
                note = f"{counts.rejected:,} bad row(s) kept in {q_display}"
                env.log(note)
                counts.notes.append(note)
            counts.loaded = loader.finish(before=before, on_commit=on_commit, committed=committed)
    except RowRefused as exc:
        raise _located(exc, profile, job.target.display) from exc
    counts.depth = dict(depth)


def _located(exc: RowRefused, profile: FileProfile, table: str) -> ValueRefused:
    """The server's refusal, named the way the user finds the row (as quarantine does)."""
    if exc.row is None:
        where = f"COPY line {exc.line:,} (its row in the file was not kept)"
    elif profile.format == "csv":
        where = f"line {exc.row + exc.line_offset:,}"
    else:
        where = f"row {exc.row:,}"
    return ValueRefused(profile.path, where, exc.column, exc.reason, table)


@contextmanager
def _frozen_heap() -> Iterator[None]:
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


def _ease(job: Job, env: Session, counts: Counts, loader: Loader) -> None:
    """Memory nears the budget: trade speed for memory, and say so once per step.

    Past 85% of the budget the pieces shrink. Past 95% the queue also drains before the next
    batch is read, but only when RSS has set a new high since the last drain: allocators keep
    freed pages, so RSS stays up after a drain, and draining every batch would only stall the
    load (measured: 4x slower) without lowering it.
    """
    rss, budget = env.watch.latest, job.plan.budget_bytes
    drain = rss > HARD_PRESSURE * budget and rss > counts.drained_at + budget // 100
    if loader.piece_bytes <= MIN_PIECE_BYTES and not drain:
        return
    piece = loader.ease(drain)
    if drain:
        counts.drained_at = rss
    note = (
        f"memory reached {rss / 1e6:,.0f} MB of the {budget / 1e6:,.0f} MB budget: "
        f"encoding in {piece / 1e6:.0f} MB pieces" + (", draining the queue" if drain else "")
    )
    if piece != counts.eased_to or drain:
        env.log(note)
    counts.eased_to = piece
    counts.notes = [n for n in counts.notes if not n.startswith("memory")]
    counts.notes.append(note)
