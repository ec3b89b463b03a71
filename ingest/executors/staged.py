"""The local executor's staged loads: each partition staged exactly once, two at a time.

Each partition is a task of its own (`exactly_once.stage`), committing its rows, bad rows and
claim in its own transaction, so a run that dies can be resumed (`resume`). `IN_FLIGHT` tasks
run at once on threads, each with its own connection and encoders, which keeps two COPY
connections busy as the one-run staging path did; a streaming plan stages one at a time
(`in_flight`). The run-wide bad-row limit is checked on the
summed results, `unique` in SQL over the staged rows (see `exactly_once`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import psycopg

from ingest.errors import BadRowsOverLimit, IngestError
from ingest.errors_server import CommitUnknown, DatabaseUnavailable, ServerFault, ServerGone
from ingest.executors import local, resume
from ingest.executors.exactly_once import stage
from ingest.executors.local import Counts, Hooks, Session
from ingest.executors.task import EXAMPLES, Job
from ingest.pg import commit
from ingest.pg.commit import PartitionResult
from ingest.pg.copy import StagingCopy
from ingest.pg.db import Conn
from ingest.pg.staging import Staged
from ingest.pg.target import Target
from ingest.runtime.progress import LoadProgress
from ingest.runtime.timeline import LoadPhases
from ingest.stages import validate
from ingest.stages.partition import Partition
from ingest.stages.plan import MIN_BATCH_BYTES, Plan
from ingest.state import claims
from ingest.state.claims import StagedRun
from ingest.state.refusal import RowRefused

# Partitions staged at once, each over its own connection.
IN_FLIGHT = 2


def in_flight(plan: Plan) -> int:
    """How many partitions to stage at once: one when the plan streams, `IN_FLIGHT` otherwise.

    A streaming plan has the budget's smallest batch already, so a second task cannot share it
    out: it adds a reader, its row group's pages and its encoder's pieces. 50M rows of the
    5-column Parquet under --memory-limit 300MB on PostgreSQL 15 (2026-12-07, alternated, 2 runs
    each): two at once peaked at 317-322 MB, 16.8-16.9 CPU-s, 34.5 s; one at a time 285-286 MB,
    14.4-15.9 CPU-s, 35.7 s (the one-pass load before staging: 283 MB).
    """
    return 1 if plan.strategy == "streaming" else IN_FLIGHT


class _Abandoned(Exception):
    """A task stopped because the run is failing or was interrupted."""


@dataclass
class _Flight:
    """The run's tasks' COPYs (for progress and easing), and the signal for them to stop."""

    stop: threading.Event = field(default_factory=threading.Event)
    seen: list[StagingCopy] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def watch(self, copy: StagingCopy) -> None:
        """Called by a task after each batch: stop if the run is failing, else be counted."""
        if self.stop.is_set():
            raise _Abandoned
        with self.lock:
            if not self.seen or all(c is not copy for c in self.seen[-IN_FLIGHT:]):
                self.seen.append(copy)

    def copies(self) -> list[StagingCopy]:
        """The latest COPYs, among them the running ones."""
        with self.lock:
            return self.seen[-IN_FLIGHT:]

    def rows(self) -> int:
        with self.lock:
            return sum(c.progress.rows for c in self.seen)

    def bytes(self) -> int:
        with self.lock:
            return sum(c.progress.bytes for c in self.seen)


def load(
    job: Job,
    env: Session,
    parts: Sequence[Partition],
    counts: Counts,
    hooks: Hooks,
    identity: resume.Identity,
    resumed: StagedRun | None,
) -> None:
    """Stage every partition not staged yet, check them all, then commit in one transaction.

    Raises:
        IngestError: a task, a check or the commit failed; the target is as it was. After a
            failure of the server or the connection, or an interruption, the staged partitions
            stay for the next run to resume; after any other, they are dropped.
    """
    with abandoned_on_failure(job, env):
        staging, results = resume.prepare(env.control, job, parts, identity, resumed, env.log)
        for result in results.values():
            local.add_result(counts, result)
        todo = [p for p in parts if p.key not in results]
        width = min(in_flight(job.plan), len(todo))
        tasks = replace(job, plan=shared(job.plan, width))
        flight = _Flight()
        progress = LoadProgress(env.console, job.profile.rows, job.plan.budget_bytes, env.progress)
        phases = LoadPhases(env.timeline, flight.rows)
        with local.frozen_heap(), progress as shown, phases:

            def update() -> None:
                shown.update(flight.rows(), flight.bytes(), env.watch.latest)
                if env.watch.latest > local.PRESSURE * job.plan.budget_bytes:
                    for copy in flight.copies():
                        local.ease(job, env, counts, copy)

            try:
                for result in _run_tasks(tasks, env, todo, staging, flight, update, width):
                    results[result.key] = result
                    local.add_result(counts, result)
            finally:  # the tasks are where a load eases
                local.sum_up_easing(counts, env.log)
            check_limit(job, counts, results.values())
            local.notes(job, env, counts)
            phases.copied()
            commit_staged(job, env, parts, results, staging, hooks, counts)


@contextmanager
def abandoned_on_failure(job: Job, env: Session) -> Iterator[None]:
    """Around a staged load: on a failure, keep its partitions for a resume or drop them
    (`abandon`), and name a refused row or a lost server the way the user finds them."""
    try:
        yield
    except RowRefused as exc:
        abandon(job, env, exc)
        raise local.located(exc, job.profile, job.target.display) from exc
    except DatabaseUnavailable as exc:  # a task could not connect: the server left mid-run
        abandon(job, env, exc)
        outcome = f"{job.target.display} was not changed"
        raise ServerGone(exc.where, f"cannot connect again: {exc.reason}", outcome=outcome) from exc
    except BaseException as exc:
        abandon(job, env, exc)
        raise


def shared(plan: Plan, tasks: int) -> Plan:
    """The plan of each of `tasks` partitions read at once: the budget's batches, shared out.

    Each task holds its own batch, the one queued behind it and the pieces being encoded, so
    two tasks with the whole batch size would hold twice the memory one load planned for.
    """
    if tasks <= 1:
        return plan
    return replace(
        plan,
        batch_rows=max(plan.batch_rows // tasks, 1_000),
        batch_bytes=plan.batch_bytes // tasks,
        chunk_bytes=max(plan.chunk_bytes // tasks, MIN_BATCH_BYTES),
        group_rows=plan.group_rows // tasks,
    )


def _run_tasks(
    job: Job,
    env: Session,
    todo: Sequence[Partition],
    staging: Target,
    flight: _Flight,
    update: Callable[[], None],
    width: int,
) -> list[PartitionResult]:
    """Stage the partitions, `width` at a time; the first failure stops the others."""
    done: list[PartitionResult] = []
    with ThreadPoolExecutor(max(width, 1), thread_name_prefix="partition") as pool:
        pending: set[Future[PartitionResult]] = {
            pool.submit(stage, env.url, job, part, staging, flight.watch) for part in todo
        }
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                for future in finished:
                    done.append(future.result())
                update()
        except BaseException:
            flight.stop.set()
            for future in pending:
                future.cancel()
            raise
    return done


def check_limit(job: Job, counts: Counts, results: Iterable[PartitionResult]) -> None:
    """The run's bad rows against its limit, exactly, from every partition's result."""
    validation = job.source.validation_data
    limit = validate.over_limit(counts.rejected, counts.read, validation)
    if limit is None:
        return
    examples = [e for r in results for e in r.examples][:EXAMPLES]
    raise BadRowsOverLimit(job.place, counts.rejected, limit, examples, job.quarantine.display)


def commit_staged(
    job: Job,
    env: Session,
    parts: Sequence[Partition],
    results: dict[str, PartitionResult],
    staging: Target,
    hooks: Hooks,
    counts: Counts,
) -> None:
    """Check every partition is staged once (and `unique` over all of them), then commit."""
    resume.check_claims(env.control, job, parts, results)
    if len(parts) > 1:
        resume.check_unique(env.control, job, staging)

    def on_commit(conn: Conn) -> None:
        hooks.on_commit(conn)
        claims.forget(conn, job.meta, job.run_id)

    rows = sum(results[p.key].rows_sent for p in parts)
    staged = Staged(staging, None, False, rows, datetime.now(UTC), job.run_id)
    spec = commit.Commit(
        env.url,
        env.control,
        job.target,
        tuple(job.output),
        job.lineage,
        hooks.before,
        on_commit,
        hooks.committed,
        env.log,
        job.merge,
    )
    counts.loaded = commit.commit(staged, spec)


def resumable(exc: BaseException) -> bool:
    """Whether a failure leaves the staged partitions for the next run to resume."""
    lost = (KeyboardInterrupt, ServerFault, DatabaseUnavailable, CommitUnknown)
    return isinstance(exc, (*lost, psycopg.OperationalError))


def abandon(job: Job, env: Session, exc: BaseException) -> None:
    """After a failure that a rerun would meet again, drop the run's staging and claims."""
    if resumable(exc):
        env.log(f"the partitions staged so far are kept: run the load again to resume run"
                f" {job.run_id}")  # fmt: skip
        return
    try:
        for run in claims.staged_runs(env.control, job.meta, job.target.display):
            if run.run_id == job.run_id:
                resume.drop(env.control, job.meta, run, "the run failed", env.log)
    except (psycopg.Error, IngestError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        env.log(
            f"could not drop the staging of run {job.run_id} ({reason}); the next run resumes"
            " or drops it"
        )
