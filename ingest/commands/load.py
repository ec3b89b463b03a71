"""The commands about loads: ingest, plan, drift, runs, build and query.

Each takes the command's `Session` and its own arguments, does the work through the package's
public API, prints through the session, and returns the exit code.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Literal

from rich.table import Table

import ingest
from ingest.commands.session import EXIT_DRIFT, EXIT_OK, Session
from ingest.errors import UsageError
from ingest.pg.db import connect
from ingest.state import ledger

if TYPE_CHECKING:
    import polars as pl

STRATEGIES = ("auto", "eager", "lazy", "streaming")
EXECUTORS = ("local", "dask")
QueryFormat = Literal["table", "csv", "json"]


def ingest_source(
    s: Session,
    source: str | None = None,
    memory_limit: str | None = None,
    strategy: str | None = None,
    force: bool = False,
    restart: bool = False,
    executor: str | None = None,
) -> int:
    """Load a source's file into PostgreSQL (raw schema), atomically; resume a killed load."""
    if strategy is not None and strategy not in STRATEGIES:
        raise UsageError(f"--strategy {strategy!r}: pick one of {', '.join(STRATEGIES)}")
    config = _with_executor(s.load_config(), executor)
    report = ingest.run_source(
        config,
        source,
        memory_limit=s.memory_limit(memory_limit),
        strategy=strategy,
        force=force,
        restart=restart,
        console=s.err,
        progress=s.progress,
    )
    s.result(report.to_dict(), lambda: s.outcome(report.summary()))
    return EXIT_OK


def _with_executor(config: ingest.PipelineConfig, executor: str | None) -> ingest.PipelineConfig:
    """The config, with the executor `--executor` names instead of its own."""
    if executor is None:
        return config
    if executor not in EXECUTORS:
        raise UsageError(f"--executor {executor!r}: pick one of {', '.join(EXECUTORS)}")
    return config.model_copy(update={"executor": executor})


def plan(
    s: Session,
    source: str | None = None,
    memory_limit: str | None = None,
    executor: str | None = None,
) -> int:
    """Explain how a source would load (estimate, budget, strategy, batch) without loading."""
    config = _with_executor(s.load_config(), executor)
    explained = ingest.explain(config, source, memory_limit=s.memory_limit(memory_limit))
    p, f = explained.plan, explained.profile
    facts: dict[str, Any] = {
        "source": explained.source.name,
        "file": str(f.path),
        "format": f.format,
        "rows": f.rows,
        "rows_exact": f.rows_exact,
        "file_bytes": f.file_bytes,
        "frame_bytes": f.frame_bytes,
        "estimate_bytes": p.estimate_bytes,
        "budget_bytes": p.budget_bytes,
        "budget_of": _budget_of(config),
        "ratio": round(p.ratio, 3),
        "strategy": p.strategy,
        "batch_rows": p.batch_rows,
        "batch_bytes": p.batch_bytes,
        "workers": p.workers or "auto: 2, or 1 to append to a table or with wal_level=minimal",
        "reason": p.reason,
        "peak_bytes": p.peak_bytes,
        "costs": {
            c.strategy: {"peak_bytes": c.peak_bytes, "fits": c.fits, "faster": c.faster}
            for c in p.costs
        },
    }

    def human() -> None:
        for key, value in facts.items():
            if key == "costs":
                continue
            sized = key.endswith("_bytes") and isinstance(value, int)
            shown = ingest.format_size(value) if sized else value
            s.out.print(f"{key:>14}: {shown}", highlight=False, markup=False)
        for cost in p.costs:  # what each strategy would take, so the choice can be checked
            note = ("fits" if cost.fits else "over its bound") + (", faster" if cost.faster else "")
            size = ingest.format_size(cost.peak_bytes)
            s.out.print(
                f"{cost.strategy:>14}: ~{size} peak ({note})", highlight=False, markup=False
            )

    s.result(facts, human)
    return EXIT_OK


def _budget_of(config: ingest.PipelineConfig) -> str:
    """Which process the memory budget bounds: this one, or each Dask worker."""
    if config.executor == "local":
        return "this process (local executor)"
    if config.dask.address is not None:
        return f"each Dask worker process of {config.dask.address} (the plan is per worker)"
    return f"each of the {config.dask.workers} Dask worker processes (the plan is per worker)"


def drift(s: Session, source: str | None = None) -> int:
    """Show how each file of a source differs from the last loaded schema; 3 on drift."""
    by_file = ingest.drift_changes(s.load_config(), source)
    drifted = [path for path, changes in by_file.items() if changes]
    data = {
        "status": "drift" if drifted else "ok",
        "files": {str(path): changes for path, changes in by_file.items()},
        "drifted": len(drifted),
    }

    def human() -> None:
        for path, changes in by_file.items():
            for line in changes or ["no drift: it matches the last loaded schema"]:
                s.out.print(f"{path.name}: {line}", markup=False, highlight=False)
        if drifted:
            s.outcome(f"drift found in {len(drifted)} of {len(by_file)} file(s)")

    s.result(data, human)
    return EXIT_DRIFT if drifted else EXIT_OK


def runs(s: Session, limit: int = 20) -> int:
    """Show the most recent runs from the ledger (status, rows, time, memory, strategy)."""
    if limit < 1:
        raise UsageError(f"--limit {limit}: give 1 or more")
    config = s.load_config()
    url = ingest.resolve_url(config.database.url, s.note)
    schema = config.database.metadata_schema
    with connect(url, autocommit=True) as conn:
        ledger.mark_stale_runs(conn, schema)
        rows = ledger.recent_runs(conn, schema, limit)
    s.result(
        {"runs": [asdict(row) for row in rows]},
        lambda: s.out.print(ledger.runs_table(rows)),
    )
    return EXIT_OK


def build(s: Session, select: Sequence[str] = ()) -> int:
    """Run `dbt build` on PostgreSQL (staging views), then on DuckDB (marts).

    `select` is a dbt selection passed to every step; a source whose table is missing is left
    out with a note naming it.
    """
    from ingest.dbt import runner as dbt

    config = s.load_config()
    url = ingest.resolve_url(config.database.url, s.note)
    settings = dbt.settings_from_config(config, url, memory_limit=s.memory_limit(None))
    steps = []
    for step in dbt.build(settings, select=select, log=s.detail, note=s.note):
        steps.append(asdict(step))
        s.err.print(
            f"[green]✓[/green] dbt {step.command} --target {step.target} "
            f"[dim]({step.seconds:.1f} s)[/dim]"
        )
    s.result({"steps": steps, "duckdb_path": str(settings.duckdb_path)}, lambda: None)
    return EXIT_OK


def query(s: Session, sql: str, fmt: QueryFormat = "table") -> int:
    """Print the result of a query on the DuckDB marts file (a table, CSV or JSON)."""
    from ingest.dbt.query import query as run_query

    frame = run_query(sql)
    if s.options.json or fmt == "json":
        rows = frame.to_dicts()
        data = {"status": "ok", "columns": frame.columns, "rows": rows, "row_count": len(rows)}
        print(json.dumps(data, default=str), flush=True)
    elif fmt == "csv":
        sys.stdout.write(frame.write_csv())
    else:
        print_frame(s, frame)
    return EXIT_OK


def print_frame(s: Session, frame: pl.DataFrame) -> None:
    """A DataFrame as a table on stdout."""
    table = Table(*frame.columns)
    for row in frame.iter_rows():
        table.add_row(*("" if v is None else str(v) for v in row))
    s.out.print(table)


def timed(s: Session, label: str, started: float) -> None:
    """A `✓ label (1.2 s)` line on stderr."""
    s.err.print(f"[green]✓[/green] {label} [dim]({time.monotonic() - started:.1f} s)[/dim]")
