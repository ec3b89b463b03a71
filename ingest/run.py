"""Compose the stages for one source: profile, plan, read, cast, validate, load, report."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl
from rich.console import Console

from ingest import cast, read
from ingest.config import PipelineConfig, SourceConfig
from ingest.db import resolve_url
from ingest.errors import SourceFileError
from ingest.load import LOADED_AT, RUN_ID, Loader, Target, check_column_names
from ingest.memory import RssWatch, available_memory, current_rss, peak_rss
from ingest.plan import Plan, make_plan, memory_budget
from ingest.profile import FileProfile, detect_format, profile_file
from ingest.progress import LoadProgress
from ingest.report import RunReport, mb
from ingest.validate import build_schema, validate_batch

Log = Callable[[str], None]


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
) -> Explained:
    """Profile a source's file and plan its load, without touching the database."""
    source = config.source(source_name)
    path = config.input_file(source)
    fmt = detect_format(path, source.format)
    profile = profile_file(path, fmt, config.os_configuration.n_rows_sample, source.csv)
    budget = memory_budget(available_memory(), config.os_configuration.os_margin, memory_limit)
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
    console: Console | None = None,
    progress: bool = True,
) -> RunReport:
    """Load one source into PostgreSQL and report what happened.

    Args:
        config: the validated config.
        source_name: which source; optional when the config has one.
        memory_limit: bytes the run may use; default from available RAM and `os_margin`.
        strategy: force eager, lazy or streaming.
        console: where logs and progress go (stderr by default).
        progress: show a progress bar.

    Returns:
        The run report.

    Raises:
        IngestError: any expected failure; the target table is then left as it was.
    """
    console = console or Console(stderr=True, soft_wrap=True)
    log: Log = lambda message: console.print(message, markup=False, highlight=False)  # noqa: E731
    started = time.monotonic()
    steps: dict[str, float] = {}
    run_id = uuid.uuid4().hex

    with RssWatch() as watch:
        explained = explain(config, source_name, memory_limit=memory_limit, strategy=strategy)
        source, profile, plan = explained.source, explained.profile, explained.plan
        steps["profile"] = time.monotonic() - started
        log(
            f"{profile.path.name}: {profile.format}, ~{profile.rows:,} rows, "
            f"{plan.strategy} ({plan.reason}), batches of {plan.batch_rows:,} rows"
        )

        check_column_names(profile.path, [*profile.schema, LOADED_AT, RUN_ID])
        casts = cast.plan_casts(config.path, profile.schema, source.schema_config, profile.sample)
        read_schema = profile.schema if profile.format == "csv" else None
        frame = read.scan(profile.path, profile.format, source.csv, read_schema)
        frame = frame.select(cast.cast_expressions(casts, profile.schema))
        output = casts.output_schema(profile.schema)
        checks = build_schema(output)
        sample_size = source.validation_data.sample_size

        target = Target(config.database.schema_, source.table_name, source.if_table_exists)
        url = resolve_url(config.database.url, log)
        total = checked = 0
        load_start = time.monotonic()
        with (
            Loader(url, target, output, run_id, plan.workers, log) as loader,
            LoadProgress(console, profile.rows, plan.budget_bytes, progress) as shown,
        ):
            try:
                for number, batch in enumerate(read.batches(frame, plan)):
                    rows, sampled = validate_batch(
                        profile.path, checks, batch, sample_size, seed=number
                    )
                    total += rows
                    checked += sampled
                    loader.send(batch)
                    shown.update(loader.progress.rows, loader.progress.bytes, watch.latest)
            except pl.exceptions.InvalidOperationError as exc:
                raise cast.cast_error(profile.path, exc, casts) from None
            except pl.exceptions.ComputeError as exc:
                raise SourceFileError(
                    profile.path,
                    str(exc).splitlines()[0],
                    "declare the column's type in schema_config.data_type (e.g. string)",
                ) from None
            loaded = loader.finish()
        steps["load"] = time.monotonic() - load_start

    return RunReport(
        run_id=run_id,
        source=source.name,
        file=str(profile.path),
        format=profile.format,
        table=target.display,
        strategy=plan.strategy,
        status="success",
        total_rows=total,
        rows_loaded=loaded,
        rows_rejected=0,
        execution_time=round(time.monotonic() - started, 3),
        memory_used_mb=mb(max(watch.peak, peak_rss())),
        estimate_mb=mb(plan.estimate_bytes),
        budget_mb=mb(plan.budget_bytes),
        batch_rows=plan.batch_rows,
        workers=plan.workers,
        validation={
            "schema_checked_rows": total,
            "data_checked_rows": checked,
            "sample_size": sample_size,
        },
        steps={k: round(v, 3) for k, v in steps.items()},
    )
