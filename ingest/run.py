"""Compose the stages for one source: profile, plan, read, cast, validate, load, report."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from functools import partial

import psycopg
from rich.console import Console

from ingest import keyed
from ingest.config import PipelineConfig, SourceConfig, is_glob
from ingest.errors import ConfigError, IngestError, SchemaMismatch, SourceFileError
from ingest.executors import dask, local  # dask.py loads Dask itself only for a Dask run
from ingest.executors.local import Counts, Log, Session
from ingest.executors.runrecord import keep_timeline
from ingest.executors.task import Job
from ingest.pg.db import Conn, connect, ensure_live, resolve_url, server_fault
from ingest.pg.facts import read_facts
from ingest.pg.locks import table_lock
from ingest.pg.staging import append_types
from ingest.pg.target import (
    Target,
    check_column_names,
    check_column_types,
    table_exists,
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
from ingest.runtime.secrets import scrub
from ingest.runtime.timeline import Timeline, phase
from ingest.stages import cast, keys, partition
from ingest.stages.plan import Plan, copy_connections, make_plan, memory_budget
from ingest.stages.profile import FileProfile, detect_format, profile_file
from ingest.stages.remote import Location
from ingest.state import drift, ledger, quarantine, schema_history, seen

# The local executor reads a CSV file as one partition: cutting it would mean reading it once more
# for its record ends, and tasks in one process gain nothing from the cut.
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
    fmt = detect_format(path, source.format)
    with phase(timeline, "profile"):
        profile = profile_file(path, fmt, config.os_configuration.n_rows_sample, source.csv)
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


def run_source(
    config: PipelineConfig,
    source_name: str | None = None,
    *,
    memory_limit: int | None = None,
    strategy: str | None = None,
    force: bool = False,
    console: Console | None = None,
    progress: bool = True,
) -> RunReport:
    """Load one source into PostgreSQL and report what happened.

    A glob loads incrementally: each matching file the ledger has not seen in the table is
    appended in a run of its own (all or nothing per file); files already loaded are skipped.

    Args:
        config: the validated config.
        source_name: which source; optional when the config has one.
        memory_limit: bytes the run may use; default from available RAM and `os_margin`.
        strategy: force eager, lazy or streaming.
        force: load a file again even if the ledger says its content is already in the table.
        console: where logs and progress go (stderr by default).
        progress: show progress.

    Returns:
        The run report (for a glob, the runs' totals, one note per file).

    Raises:
        IngestError: any expected failure; the target table is then left as it was (for a
            glob: as the files before the failing one left it).
    """
    if config.executor == "dask":  # one cluster for all the files of a glob
        with dask.shared_cluster(config, memory_limit) as on_cluster:
            return _run_files(
                on_cluster, source_name, memory_limit, strategy, force, console, progress
            )
    return _run_files(config, source_name, memory_limit, strategy, force, console, progress)


def _run_files(
    config: PipelineConfig,
    source_name: str | None,
    memory_limit: int | None,
    strategy: str | None,
    force: bool,
    console: Console | None,
    progress: bool,
) -> RunReport:
    """`run_source`'s loads, file by file for a glob."""
    source = config.source(source_name)
    files = config.input_files(source)
    if not files:
        raise SourceFileError(source.input_path, "no file matches", "check input_path")
    load = partial(
        _run_file,
        config,
        source,
        memory_limit=memory_limit,
        strategy=strategy,
        force=force,
        console=console,
        progress=progress,
    )
    if not is_glob(source.input_path):
        return load(files[0])
    if source.if_table_exists not in ("append", "merge"):
        raise ConfigError(
            config.path,
            [
                f"source {source.name!r}: input_path is a glob, which loads file by file; "
                "set if_table_exists: append (or merge)"
            ],
        )
    known = {} if force else seen.loaded_before(config, source, files, console)
    table = Target(config.database.schema_, source.table_name, "append").display
    reports = [
        seen.skipped_report(source.name, path, table, known[path]) if path in known else load(path)
        for path in files
    ]
    return RunReport.combine(reports, source.input_path)


def _run_file(
    config: PipelineConfig,
    source: SourceConfig,
    path: Location,
    *,
    memory_limit: int | None,
    strategy: str | None,
    force: bool,
    console: Console | None,
    progress: bool,
) -> RunReport:
    """Load one file of a source: the whole run, under the table's lock."""
    console = console or Console(stderr=True, soft_wrap=True)

    def log(message: str) -> None:
        console.print(message, markup=False, highlight=False)

    started = time.monotonic()
    prefer_jemalloc()
    reset_peak_rss()
    with RssWatch() as watch, Timeline(watch) as timeline:
        explained = explain(
            config,
            source.name,
            memory_limit=memory_limit,
            strategy=strategy,
            path=path,
            timeline=timeline,
        )
        profile, plan = explained.profile, explained.plan
        log(
            f"{profile.path.name}: {profile.format}, ~{profile.rows:,} rows, "
            f"{plan.strategy} ({plan.reason}), batches of {plan.batch_rows:,} rows"
        )
        lineage = (config.database.loaded_at_column, config.database.run_id_column)
        check_column_names(profile.path, list(profile.schema), lineage)
        casts = cast.plan_casts(
            config.path, profile.schema, source.schema_config, profile.sample, fmt=profile.format
        )
        unknown = [c for c in source.validation_data.checks if c not in profile.schema]
        if unknown:
            raise ConfigError(
                config.path,
                [
                    f"validation_data.checks: no column {c!r} in {profile.path.name}"
                    for c in unknown
                ],
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
        url = resolve_url(config.database.url, log)
        with connect(url, autocommit=True) as control:
            facts = read_facts(control, job.target)
            plan = make_plan(
                profile,
                plan.budget_bytes,
                base_bytes=plan.base_bytes,
                workers=config.database.workers,
                forced=strategy or source.strategy,
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
                    url, control, watch, console, log, started, progress, force, timeline
                )
                counts, status = _run_locked(job, session)
            if status == "success":
                _refresh_dbt_sources(job, control, url, counts, log)
            merged = keyed.merge_counts(job, control, url, status, log)

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
        execution_time=round(time.monotonic() - started, 3),
        memory_used_mb=mb(max(watch.peak, peak_rss())),
        estimate_mb=mb(plan.estimate_bytes),
        budget_mb=mb(plan.budget_bytes),
        batch_rows=plan.batch_rows,
        workers=plan.workers or 0,  # 0: the run stopped before it connected
        validation={
            "rows_checked": counts.depth,
            "sample_size": source.validation_data.sample_size,
            "quarantine": quarantine_display(config, source),
        },
        notes=tuple(counts.notes),
    )


def _run_locked(job: Job, env: Session) -> tuple[Counts, str]:
    """The part of a run that holds the table's lock: ledger, drift, load, commit."""
    control, log, url, watch = env.control, env.log, env.url, env.watch
    counts = Counts()
    facts = ledger.describe_file(job.profile.path)
    ledger.start_run(
        control,
        job.meta,
        run_id=job.run_id,
        config_hash=ledger.config_hash(
            {
                "source": job.source.model_dump(mode="json"),
                "database": job.config.database.model_dump(mode="json", by_alias=True),
            }
        ),
        source=job.source.name,
        file=str(facts.path),
        target=job.target.display,
        strategy=job.plan.strategy,
    )

    def finish(status: ledger.RunStatus, error: str | None) -> None:
        # The control connection may be the reason the run failed, or have gone after the
        # commit: the ledger row is then written over a new one, or its loss only logged.
        try:
            conn = ensure_live(control, url)
            try:
                ledger.finish_run(
                    conn,
                    job.meta,
                    job.run_id,
                    status=status,
                    rows_read=counts.read,
                    rows_loaded=counts.loaded,
                    rows_rejected=counts.rejected,
                    peak_rss_mb=mb(max(watch.peak, peak_rss())),
                    duration_s=time.monotonic() - env.started,
                    error=error,
                    secrets=[url],
                )
                keep_timeline(conn, job, counts, env)
            finally:
                if conn is not control:
                    conn.close()
        except (psycopg.Error, IngestError) as exc:
            reason = scrub(str(exc).splitlines()[0], [url])
            log(
                f"could not record in {job.meta}.runs that run {job.run_id} ended {status}"
                f" ({reason}); the next run marks it killed"
            )

    try:
        reached("profiled")  # under the lock, the run in the ledger, nothing read yet
        job = keyed.prepare(control, job, log)  # before anything is loaded
        into = job.target.if_exists in ("append", "merge")  # rows go into the table as it is
        appending = into and table_exists(control, job.target)
        if appending and not env.force:
            previous = ledger.loaded_file(control, job.meta, job.target.display, facts.fingerprint)
            if previous:
                note = f"{facts.path.name} is already in {job.target.display} (run {previous})"
                log(f"{note}; nothing to do (use --force to load it again)")
                counts.notes.append(note)
                finish("skipped", note)
                return counts, "skipped"
        not_null = {c for c, k in job.source.validation_data.checks.items() if not k.nullable}
        columns = drift.columns_from_polars(job.output, not_null=not_null)
        found = schema_history.check(
            control,
            job.meta,
            job.source.name,
            job.target.schema,
            job.target.table,
            columns,
            exclude=keys.own_columns(job.lineage, job.merge),
        )
        statements = drift.decide(
            job.source.on_drift,
            job.source.name,
            job.target.table,
            found,
            log,
            schema=job.target.schema,
            path=job.profile.path,
        )
        counts.drift = found.changes()
        counts.notes.extend(counts.drift)
        if appending and not statements:  # warn, or a history that differs from the table
            _refuse_new_columns(control, job, [c.name for c in columns])

        def evolve(conn: Conn) -> None:
            # Before the staged rows are inserted: they may fill a column this adds.
            schema_history.evolve(conn, job.source.name, job.target.display, statements)

        def on_commit(conn: Conn) -> None:
            schema_history.record_schema(
                conn, job.meta, job.source.name, job.target.display, columns, job.run_id
            )
            ledger.record_file(
                conn,
                job.meta,
                path=str(facts.path),
                size=facts.size,
                mtime=facts.mtime,
                fingerprint=facts.fingerprint,
                target=job.target.display,
                run_id=job.run_id,
                replace=not appending,
            )
            keyed.record_cursor(conn, job, counts.skipped, counts.cursor_top)

        def committed(conn: Conn) -> bool:
            return ledger.committed(conn, job.meta, job.run_id)

        before = evolve if appending and statements else None
        hooks = local.Hooks(on_commit, before, committed)
        if job.config.executor == "dask":
            dask.load(job, env, counts, hooks, job.config.dask)
        else:
            parts = partition.plan_partitions(
                [job.profile.path],
                job.profile.format,
                job.source.csv.has_header,
                csv_bytes=LOCAL_CSV_BYTES,
            )
            local.load(job, env, parts, counts, hooks)
    except KeyboardInterrupt:
        # Ctrl-C may land as the commit is sent: say what the database holds.
        try:
            went_through = ledger.committed(control, job.meta, job.run_id)
        except Exception:  # the interrupted connection may be unusable: report what we know
            went_through = False
        if went_through:
            log(f"interrupted after the commit: {job.target.display} holds this run's rows")
            finish("success", None)
        else:
            log(
                f"interrupted: nothing was changed in {job.target.display}; run marked killed;"
                " run again to load it"
            )
            finish("killed", "interrupted")
        raise
    except IngestError as exc:
        finish("failed", str(exc))
        raise
    except Exception as exc:
        fault = server_fault(exc, url, f"{job.target.display} was not changed")
        if fault is not None:
            finish("failed", str(fault))
            raise fault from exc
        finish("failed", f"{type(exc).__name__}: {exc}")
        raise
    finish("success", None)
    return counts, "success"


def _refuse_new_columns(control: Conn, job: Job, names: list[str]) -> None:
    """Refuse an append of columns the table lacks: the INSERT would fail on the first one."""
    target = job.target
    own = keys.own_columns(job.lineage, job.merge)
    live = schema_history.table_columns(control, target.schema, target.table, exclude=own)
    have = {c.name for c in live or ()}
    extra = [name for name in names if name not in have]
    if live is not None and extra:
        raise SchemaMismatch(target.display, job.profile.path, extra)


def quarantine_display(config: PipelineConfig, source: SourceConfig) -> str:
    """The quoted name of the table that keeps a source's bad rows."""
    schema, table = quarantine.quarantine_table(config.database.schema_, source.table_name)
    return Target(schema, table, "append").display


def _refresh_dbt_sources(job: Job, control: Conn, url: str, counts: Counts, log: Log) -> None:
    """Write the loaded table's dbt source and staging contract; the load stands if this fails."""
    from ingest.dbt import sources as dbtgen  # dbt's side loads only when a load succeeded
    from ingest.dbt.profile import write_profile
    from ingest.dbt.project import staging_project
    from ingest.runtime.paths import state_dir

    db, source = job.config.database, job.source
    project = staging_project(job.config)
    if project is None:
        log(
            f"dbt sources not written: {job.config.path.name} is not the project's config "
            "(set dbt_project: in it to write them into a dbt project)"
        )
        return
    try:
        conn = ensure_live(control, url)
        try:
            columns = schema_history.table_columns(
                conn, job.target.schema, job.target.table, exclude=job.lineage
            )
        finally:
            if conn is not control:
                conn.close()
    except (psycopg.Error, IngestError) as exc:
        note = f"dbt sources not refreshed: {scrub(str(exc).splitlines()[0], [url])}"
        log(note)
        counts.notes.append(note)
        return
    if columns is None:
        return
    not_null = {c for c, k in source.validation_data.checks.items() if not k.nullable}
    columns = [replace(c, nullable=c.name not in not_null) for c in columns]
    try:
        path = dbtgen.write_sources(
            project,
            source.name,
            job.target.schema,
            {job.target.table: columns},
            {job.target.table: source.validation_data.checks},
            loaded_at=db.loaded_at_column,
            run_id=db.run_id_column,
            column_naming=source.schema_config.column_naming or "lower",
            primary_key=keys.dbt_key(job.target.table, job.merge),
        )
        write_profile(project, url, state_dir())
    except (OSError, ValueError, IngestError) as exc:
        note = f"dbt sources not refreshed: {exc}"
        log(note)
        counts.notes.append(note)
        return
    log(f"refreshed dbt sources: {path}")
