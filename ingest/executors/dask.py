"""The Dask executor: the same partition tasks, run on the worker processes of a Dask cluster.

The coordinator (this process) creates and commits the run's staging table, submits one task
per partition with a deterministic key, and commits once when every task has reported. A task
(`ingest.executors.exactly_once.stage_partition`) connects to PostgreSQL itself and COPYs its
partition in one transaction together with its claim in the ledger, so a task Dask runs twice —
a retry, a rerun after a worker died — loads its rows once. Only small values travel: the job,
a partition's description and its result; no row passes through the scheduler.

An expected failure (`IngestError`, e.g. too many bad rows) is returned by the task rather than
raised, so Dask does not retry it; the coordinator then cancels the other tasks, drops the
staging table and fails the run with that error's one line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from psycopg import sql
from pydantic import SecretStr

from ingest.config import DaskConfig, PipelineConfig
from ingest.errors import BadRowsOverLimit, IngestError
from ingest.executors.exactly_once import stage_partition
from ingest.executors.local import Counts, Hooks, Session
from ingest.executors.local import _add as add_result  # local.py is not this module's to edit
from ingest.executors.local import _notes as notes
from ingest.executors.task import Job
from ingest.pg import commit, staging
from ingest.pg.copy import Staged, staging_table
from ingest.pg.target import Target
from ingest.runtime.memory import available_memory, current_rss, peak_rss
from ingest.stages import keys, partition, validate
from ingest.stages.partition import Partition
from ingest.stages.plan import make_plan, memory_budget
from ingest.state import claims

# Runs of a task after an error other than an `IngestError` (a dropped connection, say);
# a worker's death does not count here (Dask's `allowed-failures` bounds those).
RETRIES = 2
# Partitions per worker a load is cut into, so a slow one does not leave the others idle.
PARTS_PER_WORKER = 4
# The smallest CSV partition worth a task of its own.
MIN_CSV_PART_BYTES = 16 << 20
# Seconds to wait for an existing cluster's scheduler.
CONNECT_TIMEOUT_S = 30


@dataclass(frozen=True)
class Done:
    """A partition staged on a worker, and that worker's memory so far."""

    result: commit.PartitionResult
    worker_pid: int
    peak_rss: int


@dataclass(frozen=True)
class Refused:
    """A task's expected failure, returned rather than raised so that Dask does not retry it."""

    error: IngestError


def stage_on_worker(url: SecretStr, job: Job, part: Partition, into: Target) -> Done | Refused:
    """The task Dask runs: plan against this worker's own memory, then stage one partition.

    The URL travels as a `SecretStr`, so Dask's logs of a task (its repr) never show it.
    """
    here = make_plan(
        job.profile,
        job.plan.budget_bytes,
        base_bytes=current_rss(),
        workers=1,
        forced=job.source.strategy,
        connections=1,
    )
    try:
        result = stage_partition(url.get_secret_value(), replace(job, plan=here), part, into)
    except IngestError as exc:
        return Refused(exc)
    return Done(result, os.getpid(), peak_rss())


def cut(job: Job, workers: int) -> list[Partition]:
    """The load's partitions: about `PARTS_PER_WORKER` for each worker (whole row groups)."""
    share = max(job.profile.rows // (workers * PARTS_PER_WORKER), 1)
    size = max(job.profile.file_bytes // (workers * PARTS_PER_WORKER), MIN_CSV_PART_BYTES)
    return partition.plan_partitions(
        [job.profile.path],
        job.profile.format,
        job.source.csv.has_header,
        csv_bytes=size,
        parquet_rows=share,
    )


def load(job: Job, env: Session, counts: Counts, hooks: Hooks, settings: DaskConfig) -> None:
    """Stage every partition on the cluster, check their results, then commit once.

    Raises:
        IngestError: a task or the commit failed; the target is as it was, and the staging
            table is dropped.
    """
    into = _create_staging(job, env)
    try:
        with cluster(settings, job.plan.budget_bytes) as client:
            parts = cut(job, _worker_count(client, settings))
            env.log(
                f"dask: {len(parts)} partition(s) on {_worker_count(client, settings)} worker(s)"
                f" at {client.scheduler.address}, {job.plan.budget_bytes / 1e6:,.0f} MB each"
            )
            results = _run_tasks(client, job, env, parts, into, counts)
        notes(job, env, counts)
        sent = sum(r.rows_sent for r in results)
        commit.check_results([p.key for p in parts], results, sent)
        staged = Staged(into, None, False, sent, datetime.now(UTC), job.run_id)
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
            job.merge,  # no key watch across workers: the merge dedups as it must
        )
        counts.loaded = commit.commit(staged, spec)
    except BaseException:
        _drop(env, job, into)
        raise


def worker_budget(config: PipelineConfig, memory_limit: int | None) -> int:
    """Bytes each worker process may use: `--memory-limit` itself, else a share of free RAM."""
    if memory_limit is not None:
        return memory_limit
    free = memory_budget(available_memory(), config.os_configuration.os_margin)
    return free // config.dask.workers


@contextmanager
def shared_cluster(config: PipelineConfig, memory_limit: int | None) -> Iterator[PipelineConfig]:
    """The config, with the address of a local cluster that lives while the source loads.

    Every file of a glob then runs on the same worker processes, started once. A config that
    names a scheduler is handed back as it is.
    """
    if config.dask.address is not None:
        yield config
        return
    with _local_cluster(config.dask, worker_budget(config, memory_limit)) as local:
        address = config.dask.model_copy(update={"address": local.scheduler_address})
        yield config.model_copy(update={"dask": address})


@contextmanager
def cluster(settings: DaskConfig, worker_bytes: int) -> Iterator[Any]:
    """A client of the configured scheduler, or of a local cluster of worker processes.

    Each local worker is one process with one thread and `worker_bytes` of memory: Dask's
    nanny restarts a worker past it, and the task it ran is run again elsewhere.
    """
    from distributed import Client  # Dask loads only for a Dask run

    if settings.address is not None:
        with Client(settings.address, timeout=CONNECT_TIMEOUT_S) as client:
            yield client
        return
    with _local_cluster(settings, worker_bytes) as local, Client(local) as client:
        yield client


def _local_cluster(settings: DaskConfig, worker_bytes: int) -> Any:
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=settings.workers,
        processes=True,
        threads_per_worker=1,
        memory_limit=worker_bytes,
        dashboard_address=":0",  # any free port: no clash, no warning
    )


def _run_tasks(
    client: Any, job: Job, env: Session, parts: list[Partition], into: Target, counts: Counts
) -> list[commit.PartitionResult]:
    """Submit a task per partition and gather the results as they come; stop at a failure."""
    from distributed import as_completed

    url, lean = SecretStr(env.url), _lean(job)
    futures = [
        client.submit(
            stage_on_worker,
            url,
            lean,
            part,
            into,
            key=f"stage-{job.run_id}-{part.key}",
            retries=RETRIES,
            pure=False,
        )
        for part in parts
    ]
    results: list[commit.PartitionResult] = []
    memory: dict[int, int] = {}
    started = time.monotonic()
    try:
        for future in as_completed(futures):
            outcome = future.result()
            if isinstance(outcome, Refused):
                raise outcome.error
            results.append(outcome.result)
            add_result(counts, outcome.result)
            memory[outcome.worker_pid] = outcome.peak_rss
            _over_limit(job, counts)
            if env.progress:
                _say_done(env, job, (len(results), len(parts)), counts, memory, started)
    except BaseException:
        client.cancel(futures)
        raise
    _over_limit(job, counts, final=True)
    return results


def _lean(job: Job) -> Job:
    """The job without its profile's sample rows, which a task does not read (224 KB of
    lineitem's 225 KB pickled): what each task carries through the scheduler."""
    profile = replace(job.profile, sample=job.profile.sample.clear())
    return replace(job, profile=profile)


def _over_limit(job: Job, counts: Counts, final: bool = False) -> None:
    """Stop the run when the bad rows of all the partitions so far pass the limit."""
    total = counts.read if final else max(job.profile.rows, counts.read)
    limit = validate.over_limit(counts.rejected, total, job.source.validation_data)
    if limit is not None:
        raise BadRowsOverLimit(job.profile.path, counts.rejected, limit, [], job.quarantine.display)


def _say_done(
    env: Session,
    job: Job,
    done: tuple[int, int],
    counts: Counts,
    memory: dict[int, int],
    started: float,
) -> None:
    """Progress, a line per partition: partitions and rows done, rows/s, each worker's peak."""
    seconds = max(time.monotonic() - started, 1e-6)
    peaks = ", ".join(f"{rss / 1e6:,.0f}" for _, rss in sorted(memory.items()))
    env.log(
        f"dask: {done[0]} of {done[1]} partition(s), {counts.read:,} rows, "
        f"{counts.read / seconds:,.0f} rows/s; peak RSS per worker {peaks} MB of "
        f"{job.plan.budget_bytes / 1e6:,.0f}"
    )


def _worker_count(client: Any, settings: DaskConfig) -> int:
    workers = client.scheduler_info().get("workers", {})
    return max(len(workers), 1) if settings.address is not None else settings.workers


def _create_staging(job: Job, env: Session) -> Target:
    """Create the run's staging table and commit it, so tasks on other connections see it."""
    table = staging_table(job.target, job.run_id)
    columns = keys.staged_columns(job.output, job.merge)
    staging.prepare_target(env.control, job.target, [*columns, *job.lineage], env.log)
    claims.ensure_claims(env.control, job.meta)
    env.control.execute(staging.create_sql(table, columns))
    return table


def _drop(env: Session, job: Job, table: Target) -> None:
    """Drop the failed run's staging table and its claims; the target was never touched."""
    with env.control.transaction():
        env.control.execute(sql.SQL("drop table if exists {}").format(table.ident()))
        claims.forget(env.control, job.meta, job.run_id)
