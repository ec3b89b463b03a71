"""Compose the stages for one source: profile, plan, read, cast, validate, load, report."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace

from rich.console import Console

from ingest import keyed
from ingest.commit_hooks import commit_hooks
from ingest.config import PipelineConfig, SourceConfig, is_glob
from ingest.dbt.refresh import refresh_sources
from ingest.errors import ConfigError, IngestError, SourceFileError
from ingest.executors import dask, local, resume, runrecord  # dask.py loads Dask lazily
from ingest.executors import staged as staged_load
from ingest.executors.local import Counts, Session
from ingest.executors.task import Job
from ingest.pg.db import connect, resolve_url, server_fault
from ingest.pg.facts import read_facts
from ingest.pg.locks import table_lock
from ingest.pg.staging import append_types
from ingest.pg.target import (
    Target,
    check_column_names,
    check_column_types,
)
from ingest.runtime.hooks import reached
from ingest.runtime.memory import (
    RssWatch,
    available_memory,
    current_rss,
    peak_rss,
    prefer_jemalloc,
    reset_peak_rss,
)
from ingest.runtime.report import RunReport, mb
from ingest.runtime.timeline import Timeline, phase
from ingest.stages import cast, formats, keys, partition
from ingest.stages.plan import Plan, copy_connections, make_plan, memory_budget
from ingest.stages.profile import FileProfile, profile_file
from ingest.stages.remote import Location
from ingest.state import ledger, quarantine, seen

# A one-pass load reads a CSV file as one partition: cutting it would mean reading it once more
# for its record ends, and it cannot resume anyway.
LOCAL_CSV_BYTES = 1 << 62


@dataclass(frozen=True)
class Explained:
    """A source's profile and plan, computed without loading anything."""

    source: SourceConfig
    profile: FileProfile
    plan: Plan


def explain(
    config: PipelineConfig,
    source_name: str | None = None,
    *,
    memory_limit: int | None = None,
    strategy: str | None = None,
    path: Location | None = None,
    timeline: Timeline | None = None,
) -> Explained:
    """Profile a source's file (the first match of a glob) and plan its load, without loading.

    Raises:
        SourceFileError: no file matches the source's path.
        ValueError: an unknown strategy.
    """
    source = config.source(source_name)
    if strategy not in (None, "auto", "eager", "lazy", "streaming"):
        raise ValueError(f"unknown strategy {strategy!r}; use auto, eager, lazy or streaming")
    if path is None:
        files = config.input_files(source)
        if not files:
            raise SourceFileError(
                source.input_path, "no file matches", "check input_path in the config"
            )
        path = files[0]
    source, found = formats.as_read(source, path)
    with phase(timeline, "profile"):
        profile = profile_file(
            path, found.format, config.os_configuration.n_rows_sample, source.csv, found.compression
        )
    with phase(timeline, "plan"):
        budget = memory_budget(available_memory(), config.os_configuration.os_margin, memory_limit)
        if config.executor == "dask":  # each worker plans against its own budget
            budget = dask.worker_budget(config, memory_limit)
        plan = make_plan(
            profile,
            budget,
            base_bytes=current_rss(),
            workers=config.database.workers,
            forced=strategy or source.strategy,
        )
    return Explained(source, profile, plan)


@dataclass(frozen=True)
class _Options:
    """How the caller asked for a run to go."""

    memory_limit: int | None
    strategy: str | None
    force: bool
    restart: bool
    console: Console | None
    progress: bool


def run_source(
    config: PipelineConfig,
    source_name: str | None = None,
    *,
    memory_limit: int | None = None,
    strategy: str | None = None,
    force: bool = False,
    restart: bool = False,
    console: Console | None = None,
    progress: bool = True,
) -> RunReport:
    """Load one source into PostgreSQL and report what happened.

    A glob that appends (or merges) loads incrementally: each matching file the ledger has not
    seen in the table is appended in a run of its own (all or nothing per file); files already
    loaded are skipped. A glob that replaces the table loads all its files in one run, which
    commits them together.

    Args:
        config: the validated config.
        source_name: which source; optional when the config has one.
        memory_limit: bytes the run may use; default from available RAM and `os_margin`.
        strategy: force eager, lazy or streaming.
        force: load a file again even if the ledger says its content is already in the table.
        restart: drop what a killed run of the source staged instead of resuming it.
        console: where logs and progress go (stderr by default).
        progress: show progress.

    Returns:
        The run report (for an incremental glob, the runs' totals, one note per file).

    Raises:
        IngestError: any expected failure; the target table is then left as it was (for an
            incremental glob: as the files before the failing one left it).
    """
    options = _Options(memory_limit, strategy, force, restart, console, progress)
    if config.executor == "dask":  # one cluster for all the files of a glob
        with dask.shared_cluster(config, memory_limit) as on_cluster:
            return _run_source(on_cluster, source_name, options)
    return _run_source(config, source_name, options)


def _run_source(config: PipelineConfig, source_name: str | None, options: _Options) -> RunReport:
    """`run_source`, with the executor's cluster (if any) up."""
    source = config.source(source_name)
    files = config.input_files(source)
    if not files:
        raise SourceFileError(source.input_path, "no file matches", "check input_path")
    if not is_glob(source.input_path) or source.if_table_exists not in ("append", "merge"):
        return _run_files(config, source, files, options)
    known = {} if options.force else seen.loaded_before(config, source, files, options.console)
    table = Target(config.database.schema_, source.table_name, "append").display
    reports = [
        seen.skipped_report(source.name, path, table, known[path])
        if path in known
        else _run_files(config, source, [path], options)
        for path in files
    ]
    return RunReport.combine(reports, source.input_path)


def _run_files(
    config: PipelineConfig, source: SourceConfig, paths: list[Location], options: _Options
) -> RunReport:
    """Load files of a source in one run, under the table's lock (planned on the first)."""
    console = options.console or Console(stderr=True, soft_wrap=True)

    def log(message: str) -> None:
        console.print(message, markup=False, highlight=False)

    started = time.monotonic()
    prefer_jemalloc()
    reset_peak_rss()
    with RssWatch() as watch, Timeline(watch) as timeline:
        explained = explain(
            config,
            source.name,
            memory_limit=options.memory_limit,
            strategy=options.strategy,
            path=paths[0],
            timeline=timeline,
        )
        source, profile, plan = explained.source, explained.profile, explained.plan
        more = f" (and {len(paths) - 1} more file(s) like it)" if len(paths) > 1 else ""
        log(
            f"{profile.path.name}{more}: {profile.format}, ~{profile.rows:,} rows, "
            f"{plan.strategy} ({plan.reason}), batches of {plan.batch_rows:,} rows"
        )
        job = _job(config, source, profile, plan)
        url = resolve_url(config.database.url, log)
        with connect(url, autocommit=True) as control:
            facts = read_facts(control, job.target)
            plan = make_plan(
                profile,
                plan.budget_bytes,
                base_bytes=plan.base_bytes,
                workers=config.database.workers,
                forced=options.strategy or source.strategy,
                connections=copy_connections(
                    facts, job.target.if_exists, append_types(job.output, job.lineage)
                ),
            )
            job = replace(job, plan=plan)
            ledger.ensure_ledger(control, job.meta)
            killed = ledger.mark_stale_runs(control, job.meta)
            if killed:
                log(f"marked {killed} earlier run(s) that did not finish as killed")
            with table_lock(control, job.target.schema, job.target.table, log=log):
                session = Session(
                    url,
                    control,
                    watch,
                    console,
                    log,
                    started,
                    options.progress,
                    options.force,
                    timeline,
                    options.restart,
                )
                job, counts, status = _run_locked(job, session, paths)
            if status == "success":
                refresh_sources(job, control, url, counts, log)
            merged = keyed.merge_counts(job, control, url, status, log)
    memory = mb(max(watch.peak, peak_rss()))
    return _report(job, status, counts, merged, time.monotonic() - started, memory)


def _job(config: PipelineConfig, source: SourceConfig, profile: FileProfile, plan: Plan) -> Job:
    """The load, resolved from the profile before any connection.

    Raises:
        ConfigError: a check names a column the file lacks.
        BadColumnName, UnsupportedColumnType: a column PostgreSQL cannot take.
    """
    lineage = (config.database.loaded_at_column, config.database.run_id_column)
    check_column_names(profile.path, list(profile.schema), lineage)
    casts = cast.plan_casts(
        config.path, profile.schema, source.schema_config, profile.sample, fmt=profile.format
    )
    unknown = [c for c in source.validation_data.checks if c not in profile.schema]
    if unknown:
        raise ConfigError(
            config.path,
            [f"validation_data.checks: no column {c!r} in {profile.path.name}" for c in unknown],
        )
    job = Job(
        config=config,
        source=keys.with_key_checks(source),  # a NULL key is a bad row
        profile=profile,
        plan=plan,
        casts=casts,
        output=casts.output_schema(profile.schema),
        target=Target(config.database.schema_, source.table_name, source.if_table_exists),
        run_id=uuid.uuid4().hex,
    )
    job = keyed.plan(job)
    check_column_types(profile.path, job.output)
    return job


def _report(
    job: Job, status: str, counts: Counts, merged: dict[str, int], seconds: float, memory: float
) -> RunReport:
    plan, profile, source = job.plan, job.profile, job.source
    return RunReport(
        run_id=job.run_id,
        source=source.name,
        file=str(profile.path),
        format=profile.format,
        table=job.target.display,
        strategy=plan.strategy,
        status=status,
        total_rows=counts.read,
        rows_loaded=counts.loaded,
        rows_rejected=counts.rejected,
        merge=merged,
        rows_skipped=counts.skipped,
        execution_time=round(seconds, 3),
        memory_used_mb=memory,
        estimate_mb=mb(plan.estimate_bytes),
        budget_mb=mb(plan.budget_bytes),
        batch_rows=plan.batch_rows,
        workers=plan.workers or 0,  # 0: the run stopped before it connected
        validation={
            "rows_checked": counts.depth,
            "sample_size": source.validation_data.sample_size,
            "quarantine": quarantine_display(job.config, source),
        },
        notes=tuple(counts.notes),
    )


def _run_locked(job: Job, env: Session, paths: list[Location]) -> tuple[Job, Counts, str]:
    """The part of a run that holds the table's lock: ledger, drift, load, commit."""
    counts = Counts()
    files = [ledger.describe_file(p) for p in paths]
    identity = resume.Identity(
        resume.fingerprint_of([f.fingerprint for f in files]), _config_hash(job)
    )
    on_dask = job.config.executor == "dask"
    source = job.source
    staged = on_dask or (job.plan.workers != 1 and resume.resumable(job, len(paths)))
    csv_bytes, parquet_rows = resume.STAGED_CSV_BYTES, resume.STAGED_PARQUET_ROWS
    if not staged:
        csv_bytes, parquet_rows = LOCAL_CSV_BYTES, partition.PARQUET_PARTITION_ROWS
    if on_dask:  # a few partitions for each worker
        csv_bytes, parquet_rows = dask.partition_sizes(job, len(paths))
    parts = partition.plan_partitions(
        paths,
        job.profile.format,
        source.csv.has_header,
        csv_bytes=source.partition_bytes or csv_bytes,
        parquet_rows=source.partition_rows or parquet_rows,
        compression=job.profile.compression,
    )
    resumed = None
    if staged:
        resumed = resume.adopt(
            env.control,
            job,
            parts,
            identity,
            restart=env.restart,
            max_age_hours=job.config.database.resume_max_age_hours,
            log=env.log,
        )
    if resumed is not None:
        job = resume.continuing(job, resumed)
        resume.reopen_run(env.control, job.meta, job.run_id)
    else:
        ledger.start_run(
            env.control,
            job.meta,
            run_id=job.run_id,
            config_hash=identity.config_hash,
            source=job.source.name,
            file=str(files[0].path) if len(files) == 1 else job.source.input_path,
            target=job.target.display,
            strategy=job.plan.strategy,
        )
    try:
        reached("profiled")  # under the lock, the run in the ledger, nothing read yet
        job = keyed.prepare(env.control, job, env.log)  # before anything is loaded
        hooks = commit_hooks(job, env, counts, files)
        if hooks is None:
            return job, counts, "skipped"
        if on_dask:
            dask.load(job, env, parts, counts, hooks, identity, resumed)
        elif staged:
            staged_load.load(job, env, parts, counts, hooks, identity, resumed)
        else:
            local.load(job, env, parts, counts, hooks)
    except KeyboardInterrupt:
        runrecord.interrupted(job, env, counts)
        raise
    except IngestError as exc:
        runrecord.finish(job, env, counts, "failed", str(exc))
        raise
    except Exception as exc:
        fault = server_fault(exc, env.url, f"{job.target.display} was not changed")
        if fault is not None:
            runrecord.finish(job, env, counts, "failed", str(fault))
            raise fault from exc
        runrecord.finish(job, env, counts, "failed", f"{type(exc).__name__}: {exc}")
        raise
    runrecord.finish(job, env, counts, "success", None)
    return job, counts, "success"


def _config_hash(job: Job) -> str:
    return ledger.config_hash(
        {
            "source": job.source.model_dump(mode="json"),
            "database": job.config.database.model_dump(mode="json", by_alias=True),
        }
    )


def quarantine_display(config: PipelineConfig, source: SourceConfig) -> str:
    """The quoted name of the table that keeps a source's bad rows."""
    schema, table = quarantine.quarantine_table(config.database.schema_, source.table_name)
    return Target(schema, table, "append").display
