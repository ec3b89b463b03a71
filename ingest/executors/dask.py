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
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from pydantic import SecretStr

from ingest.config import DaskConfig, PipelineConfig
from ingest.errors import BadRowsOverLimit, IngestError
from ingest.executors import resume, staged
from ingest.executors.exactly_once import stage_partition
from ingest.executors.local import Counts, Hooks, Session, add_result, notes
from ingest.executors.task import EXAMPLES, Job
from ingest.pg import commit
from ingest.pg.target import Target
from ingest.runtime.memory import available_memory, current_rss, peak_rss
from ingest.stages import validate
from ingest.stages.partition import Partition
from ingest.stages.plan import make_plan, memory_budget
from ingest.state.claims import StagedRun

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


def partition_sizes(job: Job, files: int) -> tuple[int, int]:
    """CSV bytes and Parquet rows a partition spans: about `PARTS_PER_WORKER` per worker.

    The configured `dask.workers` is the count planned for, with an existing cluster too.
    """
    slots = job.config.dask.workers * PARTS_PER_WORKER
    rows = max(job.profile.rows * files // slots, 1)  # row groups are never split
    size = max(job.profile.file_bytes * files // slots, MIN_CSV_PART_BYTES)
    return size, rows


def load(
    job: Job,
    env: Session,
    parts: Sequence[Partition],
    counts: Counts,
    hooks: Hooks,
    identity: resume.Identity,
    resumed: StagedRun | None,
) -> None:
    """Stage the partitions not staged yet on the cluster, check them all, commit once.

    The staged load's flow (`ingest.executors.staged`), with its tasks on Dask workers.

    Raises:
        IngestError: a task, a check or the commit failed; the target is as it was. After a
            server or connection failure the staged partitions stay for a resume; after any
            other failure they are dropped with the staging table.
    """
    with staged.abandoned_on_failure(job, env):
        into, results = resume.prepare(env.control, job, parts, identity, resumed, env.log)
        for result in results.values():
            add_result(counts, result)
        todo = [p for p in parts if p.key not in results]
        with cluster(job.config.dask, job.plan.budget_bytes) as client:
            env.log(
                f"dask: {len(todo)} partition(s) to stage on {_worker_count(client)} worker(s)"
                f" at {client.scheduler.address}, {job.plan.budget_bytes / 1e6:,.0f} MB each"
            )
            for result in _run_tasks(client, job, env, todo, into, counts):
                results[result.key] = result
        staged.check_limit(job, counts, results.values())
        notes(job, env, counts)
        staged.commit_staged(job, env, parts, results, into, hooks, counts)


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


# Dask's housekeeping, slowed for tasks that run for seconds: its statistical profiler samples
# every worker's threads each 10 ms, and the event loops tick each 20 ms. Measured on an idle
# local cluster of 2 workers: 2.5 CPU-s every 30 s with the defaults, 0.6 with these.
QUIET = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
}


def _local_cluster(settings: DaskConfig, worker_bytes: int) -> Any:
    import dask
    from distributed import LocalCluster

    with dask.config.set(QUIET):  # the workers are started with it
        return LocalCluster(
            n_workers=settings.workers,
            processes=True,
            threads_per_worker=1,
            memory_limit=worker_bytes,
            dashboard_address=":0",  # any free port: no clash, no warning
        )


def _run_tasks(
    client: Any,
    job: Job,
    env: Session,
    parts: Sequence[Partition],
    into: Target,
    counts: Counts,
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
            _over_limit(job, counts, results)
            if env.progress:
                _say_done(env, job, (len(results), len(parts)), counts, memory, started)
    except BaseException:
        client.cancel(futures)
        raise
    return results


def _lean(job: Job) -> Job:
    """The job without its profile's sample rows, which a task does not read (224 KB of
    lineitem's 225 KB pickled): what each task carries through the scheduler."""
    profile = replace(job.profile, sample=job.profile.sample.clear())
    return replace(job, profile=profile)


def _over_limit(job: Job, counts: Counts, results: list[commit.PartitionResult]) -> None:
    """Stop early when the bad rows so far pass `max_bad_rows`, exact at any point; a fraction
    needs every row counted, so `staged` checks it over all the results before the commit."""
    limit = validate.over_limit(counts.rejected, sys.maxsize, job.source.validation_data)
    if limit is not None:
        examples = [e for r in results for e in r.examples][:EXAMPLES]
        where, shown = job.place, job.quarantine.display
        raise BadRowsOverLimit(where, counts.rejected, limit, examples, shown)


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


def _worker_count(client: Any) -> int:
    return len(client.scheduler_info().get("workers", {}))
