"""Project tasks: `invoke --list` shows them. Each one calls the `ingest` package or dbt."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task
from rich.console import Console
from rich.table import Table

import ingest
from ingest.pg import embedded
from ingest.runtime.memory import lean_imports
from ingest.runtime.paths import state_dir

if TYPE_CHECKING:  # dbt and DuckDB load only for the tasks that use them
    from ingest.dbt.runner import DbtSettings

lean_imports()  # this program keeps pandas out of its loads; the library leaves its host alone
T = TypeVar("T")
err = Console(stderr=True, soft_wrap=True)
out = Console() if sys.stdout.isatty() else Console(width=200)


@contextmanager
def _errors(report_json: bool = False) -> Iterator[None]:
    """Expected failures become one clear message and exit code 1, never a traceback.

    With `report_json`, a failure also prints one JSON object on stdout (`status: failed` and
    the error), so a caller that parses stdout learns why instead of reading nothing.
    """
    try:
        yield
    except Exception as exc:
        if report_json:
            failed = {"status": "failed", "error": str(exc), "error_type": type(exc).__name__}
            print(json.dumps(failed), flush=True)
        if isinstance(exc, ingest.IngestError):
            raise Exit(f"error: {exc}", code=1) from None
        if isinstance(exc, ValueError):
            raise Exit(f"error: {exc}", code=2) from None
        raise
    except _Terminated:  # the run has said what it left behind, as for Ctrl-C
        raise Exit("terminated", code=128 + signal.SIGTERM) from None
    except KeyboardInterrupt:  # the run has said what it left behind
        raise Exit("interrupted", code=130) from None


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so the run stops the same orderly way."""


@contextmanager
def _terminate_like_ctrl_c() -> Iterator[None]:
    """While a load runs, SIGTERM (a service manager's stop) does what Ctrl-C does."""

    def stop(signum: int, frame: object) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _timed(label: str, step: Callable[[], T]) -> T:
    started = time.monotonic()
    result = step()
    err.print(f"[green]✓[/green] {label} [dim]({time.monotonic() - started:.1f} s)[/dim]")
    return result


def _limit(memory_limit: str | None) -> int | None:
    text = memory_limit or os.environ.get("PIPELINE_MEMORY_LIMIT")
    return ingest.parse_size(text) if text else None


def _dbt_settings(config: ingest.PipelineConfig, url: str) -> DbtSettings:
    from ingest.dbt import runner as dbt

    return dbt.settings_from_config(config, url, memory_limit=_limit(None))


def _print_frame(frame: object, fmt: str) -> None:
    import polars as pl

    assert isinstance(frame, pl.DataFrame)
    if fmt == "csv":
        sys.stdout.write(frame.write_csv())
    elif fmt == "json":
        sys.stdout.write(json.dumps(frame.to_dicts(), default=str) + "\n")
    else:
        table = Table(*frame.columns)
        for row in frame.iter_rows():
            table.add_row(*("" if v is None else str(v) for v in row))
        out.print(table)


@task(
    name="ingest",
    help={
        "config": "YAML or TOML config file (default: config.yml)",
        "source": "which source, when the config has several",
        "json": "print one JSON object on stdout (logs go to stderr)",
        "memory_limit": "memory the run may use, e.g. 400MB or 2GiB (or PIPELINE_MEMORY_LIMIT)",
        "strategy": "force eager, lazy or streaming",
        "force": "load the file again even if the ledger says it is already in the table",
    },
)
def ingest_(
    c: Context,
    config: str = "config.yml",
    source: str | None = None,
    json: bool = False,
    memory_limit: str | None = None,
    strategy: str | None = None,
    force: bool = False,
) -> None:
    """Load a source's file into PostgreSQL (raw schema), atomically."""
    with _errors(report_json=json), _terminate_like_ctrl_c():
        settings = ingest.load_config(config)
        report = ingest.run_source(
            settings,
            source,
            memory_limit=_limit(memory_limit),
            strategy=strategy,
            force=force,
            progress=not json,
        )
    if json:
        print(report.to_json())
    else:
        err.print(report.summary(), markup=False, highlight=False)


@task(
    name="plan",
    help={
        "config": "YAML or TOML config file (default: config.yml)",
        "source": "which source, when the config has several",
        "memory_limit": "memory the run may use, e.g. 400MB",
        "json": "print one JSON object",
    },
)
def plan_(
    c: Context,
    config: str = "config.yml",
    source: str | None = None,
    memory_limit: str | None = None,
    json: bool = False,
) -> None:
    """Explain how a source would load (estimate, budget, strategy, batch) without loading."""
    import json as jsonlib

    with _errors():
        explained = ingest.explain(
            ingest.load_config(config), source, memory_limit=_limit(memory_limit)
        )
    p, f = explained.plan, explained.profile
    facts = {
        "source": explained.source.name,
        "file": str(f.path),
        "format": f.format,
        "rows": f.rows,
        "rows_exact": f.rows_exact,
        "file_bytes": f.file_bytes,
        "frame_bytes": f.frame_bytes,
        "estimate_bytes": p.estimate_bytes,
        "budget_bytes": p.budget_bytes,
        "ratio": round(p.ratio, 3),
        "strategy": p.strategy,
        "batch_rows": p.batch_rows,
        "batch_bytes": p.batch_bytes,
        "workers": p.workers or "auto: 2, or 1 to append to a table or with wal_level=minimal",
        "reason": p.reason,
    }
    if json:
        print(jsonlib.dumps(facts))
        return
    for key, value in facts.items():
        shown = (
            ingest.format_size(value)
            if key.endswith("_bytes") and isinstance(value, int)
            else value
        )
        out.print(f"{key:>14}: {shown}", highlight=False)


@task(help={"config": "config file whose database and naming settings dbt uses"})
def build(c: Context, config: str = "config.yml") -> None:
    """Run `dbt build` on PostgreSQL (staging views), then on DuckDB (marts)."""
    with _errors():
        settings = ingest.load_config(config)
        url = ingest.resolve_url(settings.database.url, err.print)
        from ingest.dbt import runner as dbt

        for step in dbt.build(_dbt_settings(settings, url)):
            err.print(
                f"[green]✓[/green] dbt {step.command} --target {step.target} "
                f"[dim]({step.seconds:.1f} s)[/dim]"
            )


@task(
    help={
        "sql": "SQL to run against the DuckDB marts",
        "csv": "print CSV",
        "json": "print a JSON array of rows",
    }
)
def query(c: Context, sql: str, csv: bool = False, json: bool = False) -> None:
    """Print the result of a query on the DuckDB marts file (a table, or --csv / --json)."""
    with _errors():
        from ingest.dbt.query import query as run_query

        _print_frame(run_query(sql), "csv" if csv else "json" if json else "table")


@task(help={"rows": "rows of demo data (default 1,000,000)"})
def demo(c: Context, rows: int = 1_000_000) -> None:
    """Generate demo data, load it (embedded PostgreSQL if none configured), build marts, query."""
    from ingest.dbt import runner as dbt
    from ingest.dbt.query import query as run_query

    with _errors():
        files = _timed(
            f"wrote {rows:,} demo rows (Parquet and CSV) under {state_dir() / 'data'}",
            lambda: ingest.write_demo(state_dir() / "data", rows),
        )
        config = ingest.load_config("config.yml")
        url = _timed("database ready", lambda: ingest.resolve_url(config.database.url, err.print))
        err.print(f"  using PostgreSQL at {ingest.describe(url)}", highlight=False)
        report = _timed(f"ingested {files.parquet.name}", lambda: ingest.run_source(config))
        err.print(report.summary(), markup=False, highlight=False)
        multi = ingest.load_config("examples/multi.yml")
        report = _timed(
            f"ingested {files.csv.name}", lambda: ingest.run_source(multi, "employees_csv")
        )
        err.print(report.summary(), markup=False, highlight=False)
        steps = _timed(
            "dbt build (PostgreSQL staging, DuckDB marts)",
            lambda: dbt.build(_dbt_settings(config, url)),
        )
        for step in steps:
            err.print(f"  dbt {step.command} --target {step.target}: {step.seconds:.1f} s")
        frame = run_query(
            "select department, hire_year, headcount, avg_salary "
            "from mart_department_salary order by hire_year desc, department "
            "limit 8"
        )
    _print_frame(frame, "table")
    err.print('Try: invoke query "select * from mart_hires_by_month limit 12"')


@task(help={"config": "config file naming the database", "limit": "how many runs"})
def runs(c: Context, config: str = "config.yml", limit: int = 20) -> None:
    """Show the most recent runs from the ledger (status, rows, time, memory, strategy)."""
    with _errors():
        settings = ingest.load_config(config)
        url = ingest.resolve_url(settings.database.url, err.print)
        out.print(ingest.recent_runs_table(url, settings.database.metadata_schema, limit))


@task(
    name="report",
    help={
        "run_id": "the run (or the start of its id, as `invoke runs` shows it)",
        "latest": "the latest run (the default when no run id is given)",
        "out": "the HTML file to write (default: .pipeline/reports/run-<id>.html)",
        "config": "config file naming the database",
    },
)
def report_(
    c: Context,
    run_id: str | None = None,
    latest: bool = False,
    out: str | None = None,
    config: str = "config.yml",
) -> None:
    """Write a run's report as one HTML page (rows/s, memory, phases, rejects, drift)."""
    from pathlib import Path

    if run_id and latest:
        raise Exit("error: give a run id or --latest, not both", code=2)
    with _errors():
        settings = ingest.load_config(config)
        url = ingest.resolve_url(settings.database.url, err.print)
        path = ingest.write_run_report(
            url, settings.database.metadata_schema, run_id, Path(out) if out else None
        )
    written = path.resolve()
    print(written)
    err.print(f"open it in a browser: {written.as_uri()}", highlight=False)


@task(
    name="drift",
    help={
        "config": "YAML or TOML config file (default: config.yml)",
        "source": "which source, when the config has several",
    },
)
def drift_(c: Context, config: str = "config.yml", source: str | None = None) -> None:
    """Show how each file of a source differs from the last loaded schema; exit 3 on drift."""
    with _errors():
        by_file = ingest.drift_changes(ingest.load_config(config), source)
    for path, changes in by_file.items():
        for line in changes or ["no drift: it matches the last loaded schema"]:
            out.print(f"{path.name}: {line}", markup=False, highlight=False)
    drifted = [path for path, changes in by_file.items() if changes]
    if drifted:
        raise Exit(f"drift found in {len(drifted)} of {len(by_file)} file(s)", code=3)


@task(
    help={
        "scale": "TPC-H scale factor of lineitem (1 = 6,001,215 rows)",
        "rows": "use the 5-column synthetic table with this many rows instead of lineitem (0: off)",
        "strategies": "comma-separated ingest strategies to time (default: all four)",
        "repeat": "run each command this many times and keep the median",
        "csv": "also time the CSV input",
    }
)
def bench(
    c: Context,
    scale: str = "1",
    rows: int = 0,
    strategies: str = "auto,eager,lazy,streaming",
    repeat: int = 1,
    csv: bool = True,
) -> None:
    """Time ingest against psql \\copy and DuckDB on one PostgreSQL; print and save the table."""
    from bench.run import bench_dir, run_bench

    with _errors():
        url = ingest.resolve_url(None, err.print)
        report = run_bench(
            url,
            scale=float(scale),
            rows=rows or None,
            strategies=[s.strip() for s in strategies.split(",") if s.strip()],
            include_csv=csv,
            repeat=repeat,
            log=err.print,
        )
    path = report.write(bench_dir())
    out.print(report.table())
    err.print(f"saved {path}")
    failed = [r.tool + "/" + r.strategy for r in report.rows if not r.ok]
    if failed:
        raise Exit(f"benchmark commands failed: {', '.join(failed)}", code=1)


@task(help={"args": "extra pytest arguments"})
def test(c: Context, args: str = "") -> None:
    """Run the whole test suite (unit and integration; embedded PostgreSQL without DATABASE_URL)."""
    c.run(f"{sys.executable} -m pytest {args}", pty=False)


@task
def lint(c: Context) -> None:
    """Run ruff and mypy --strict."""
    c.run(f"{sys.executable} -m ruff check ingest bench tests tasks.py")
    c.run(f"{sys.executable} -m mypy ingest bench")


@task(name="up")
def db_up(c: Context) -> None:
    """Start the embedded PostgreSQL (data under .pipeline/postgres)."""
    with _errors():
        server = embedded.start(log=err.print)
    out.print(f"embedded PostgreSQL running: {server.url}")


@task(name="down")
def db_down(c: Context) -> None:
    """Stop the embedded PostgreSQL."""
    with _errors():
        stopped = embedded.stop()
    out.print("stopped" if stopped else "it was not running")


@task(name="status")
def db_status(c: Context) -> None:
    """Say whether the embedded PostgreSQL runs, and where."""
    server = embedded.status()
    out.print(f"running: {server.url} (pid {server.pid})" if server else "not running")


db = Collection("db", db_up, db_down, db_status)
ns = Collection(ingest_, plan_, build, query, demo, runs, report_, drift_, bench, test, lint, db)
