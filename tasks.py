"""Project tasks: `invoke --list` shows them. Each calls the command the `pgloadkit` console
script runs (`ingest.commands`), in this project (the folder holding this file), so
`invoke -r PATH ...` from anywhere uses PATH's state and embedded server."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from ingest.commands import demo as demo_command
from ingest.commands import doctor as doctor_command
from ingest.commands import load, server
from ingest.commands.session import Command, Options, execute
from ingest.runtime.memory import lean_imports

lean_imports()  # this program keeps pandas out of its loads; the library leaves its host alone
ROOT = Path(__file__).resolve().parent
CONFIG_HELP = "YAML or TOML config file (default: the project's config.yml)"


def _run(command: Command, *, json: bool = False, config: str | None = None) -> None:
    """Run a command as `pgloadkit` would; its exit code becomes the task's."""
    code = execute(Options(json=json, project_dir=ROOT, config=config), command)
    if code:
        raise Exit(code=code)


@task(
    name="ingest",
    help={
        "config": CONFIG_HELP,
        "source": "which source, when the config has several",
        "json": "print one JSON object on stdout (logs go to stderr)",
        "memory_limit": "memory the run may use, e.g. 400MB or 2GiB (or PIPELINE_MEMORY_LIMIT)",
        "strategy": "force eager, lazy or streaming",
        "force": "load the file again even if the ledger says it is already in the table",
        "restart": "drop what a killed load of the source staged and start it over",
        "executor": "local, or dask (the config's dask: settings)",
    },
)
def ingest_(
    c: Context,
    config: str | None = None,
    source: str | None = None,
    json: bool = False,
    memory_limit: str | None = None,
    strategy: str | None = None,
    force: bool = False,
    restart: bool = False,
    executor: str | None = None,
) -> None:
    """Load a source's file into PostgreSQL (raw schema), atomically; resume a killed load."""
    command = partial(
        load.ingest_source,
        source=source,
        memory_limit=memory_limit,
        strategy=strategy,
        force=force,
        restart=restart,
        executor=executor,
    )
    _run(command, json=json, config=config)


@task(
    name="plan",
    help={
        "config": CONFIG_HELP,
        "source": "which source, when the config has several",
        "memory_limit": "memory the run may use, e.g. 400MB (with dask: each worker)",
        "json": "print one JSON object",
        "executor": "local, or dask: the plan is then each worker's",
    },
)
def plan_(
    c: Context,
    config: str | None = None,
    source: str | None = None,
    memory_limit: str | None = None,
    json: bool = False,
    executor: str | None = None,
) -> None:
    """Explain how a source would load (estimate, budget, strategy, batch) without loading."""
    command = partial(load.plan, source=source, memory_limit=memory_limit, executor=executor)
    _run(command, json=json, config=config)


@task(
    help={
        "config": "config file whose database and naming settings dbt uses",
        "select": "dbt node selection for every step, e.g. 'source:employees+' (default: all)",
    }
)
def build(c: Context, config: str | None = None, select: str | None = None) -> None:
    """Run `dbt build` on PostgreSQL (staging views), then on DuckDB (marts)."""
    chosen = tuple(select.split()) if select else ()
    _run(partial(load.build, select=chosen), config=config)


@task(
    help={
        "sql": "SQL to run against the DuckDB marts",
        "csv": "print CSV",
        "json": "print one JSON object: columns and rows",
    }
)
def query(c: Context, sql: str, csv: bool = False, json: bool = False) -> None:
    """Print the result of a query on the DuckDB marts file (a table, or --csv / --json)."""
    fmt: load.QueryFormat = "json" if json else "csv" if csv else "table"
    _run(partial(load.query, sql=sql, fmt=fmt), json=json)


@task(help={"rows": "rows of demo data (default 1,000,000)"})
def demo(c: Context, rows: int = 1_000_000) -> None:
    """Generate demo data, load it (embedded PostgreSQL if none configured), build marts, query."""
    _run(partial(demo_command.demo, rows=rows))


@task(help={"config": "config file naming the database", "limit": "how many runs"})
def runs(c: Context, config: str | None = None, limit: int = 20) -> None:
    """Show the most recent runs from the ledger (status, rows, time, memory, strategy)."""
    _run(partial(load.runs, limit=limit), config=config)


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
    config: str | None = None,
) -> None:
    """Write a run's report as one HTML page (rows/s, memory, phases, rejects, drift)."""
    from ingest.commands.report import report

    _run(partial(report, run_id=run_id, latest=latest, out=out), config=config)


@task(
    name="drift",
    help={"config": CONFIG_HELP, "source": "which source, when the config has several"},
)
def drift_(c: Context, config: str | None = None, source: str | None = None) -> None:
    """Show how each file of a source differs from the last loaded schema; exit 3 on drift."""
    _run(partial(load.drift, source=source), config=config)


@task(help={"config": CONFIG_HELP, "json": "print one JSON object"})
def doctor(c: Context, config: str | None = None, json: bool = False) -> None:
    """Check the database, the embedded server, dbt, DuckDB and memory; exit 1 on a problem."""
    _run(doctor_command.doctor, json=json, config=config)


@task(
    help={
        "scale": "TPC-H scale factor of lineitem (1 = 6,001,215 rows)",
        "rows": "use the 5-column synthetic table with this many rows instead of lineitem (0: off)",
        "strategies": "comma-separated ingest strategies to time (default: all four)",
        "repeat": "run each command this many times and keep the median",
        "csv": "also time the CSV input",
        "merge": "time the merge strategies against a full replace instead (bench/merge.py)",
        "s3": "also time the Parquet file read from a local S3 server (moto), ingest and DuckDB",
        "embedded": "also load into the embedded server (wal_level=minimal)",
        "compressed": "also time the CSV as .csv.gz and .csv.zst (zcat | psql, DuckDB, ingest)",
        "executor": "dask: the Dask executor (2 workers) against the local one instead",
        "data": "folder of cached inputs (default: the project's bench/data)",
    }
)
def bench(
    c: Context,
    scale: str = "1",
    rows: int = 0,
    strategies: str = "auto,eager,lazy,streaming",
    repeat: int = 1,
    csv: bool = True,
    merge: bool = False,
    s3: bool = True,
    embedded: bool = True,
    compressed: bool = True,
    executor: str = "",
    data: str = "",
) -> None:
    """Time ingest against psql \\copy and its peers on one PostgreSQL; print and save the table."""
    from bench.task import bench as bench_command

    _run(
        partial(
            bench_command,
            scale=scale,
            rows=rows,
            strategies=strategies,
            repeat=repeat,
            csv=csv,
            s3=s3,
            merge=merge,
            embedded=embedded,
            compressed=compressed,
            executor=executor,
            data=data,
        )
    )


@task(help={"args": "extra pytest arguments"})
def test(c: Context, args: str = "") -> None:
    """Run the whole test suite (unit and integration; embedded PostgreSQL without DATABASE_URL)."""
    c.run(f"{sys.executable} -m pytest {args}", pty=False)


@task
def lint(c: Context) -> None:
    """Run ruff and mypy --strict."""
    c.run(f"{sys.executable} -m ruff check ingest bench tests tasks.py")
    c.run(f"{sys.executable} -m mypy ingest bench")


@task(name="up", help={"json": "print one JSON object"})
def db_up(c: Context, json: bool = False) -> None:
    """Start the embedded PostgreSQL (data under .pipeline/postgres)."""
    _run(server.db_up, json=json)


@task(name="down", help={"json": "print one JSON object"})
def db_down(c: Context, json: bool = False) -> None:
    """Stop the embedded PostgreSQL."""
    _run(server.db_down, json=json)


@task(name="status", help={"json": "print one JSON object"})
def db_status(c: Context, json: bool = False) -> None:
    """Say whether the embedded PostgreSQL runs, and where."""
    _run(server.db_status, json=json)


@task(name="url", help={"show_password": "print the password instead of ***"})
def db_url(c: Context, show_password: bool = False) -> None:
    """Print the URL of the database commands use (starting the embedded server if needed)."""
    _run(partial(server.db_url, show_password=show_password))


db = Collection("db", db_up, db_down, db_status, db_url)
ns = Collection(
    ingest_, plan_, build, query, demo, runs, report_, drift_, doctor, bench, test, lint, db
)
