"""`invoke bench --executor dask`: the Dask executor against the local one, alternated.

Each load is `invoke ingest` in a fresh child process, measured as every benchmark command is
(`bench.measure.measure`): wall time, client CPU seconds of the whole process tree (the Dask
scheduler and worker processes are the child's descendants, reaped before it exits, so their CPU
is in its `RUSAGE_CHILDREN`), the tree's peak RSS, and the largest single process's `ru_maxrss`
(for Dask: the coordinator or one worker, whichever peaked higher). Runs alternate local, dask,
local, dask … so the machine's drift falls on both alike.

Two inputs: TPC-H lineitem SF1 as one Parquet file, and the 5-column synthetic table cut into
`FILES` Parquet files loaded through a glob (an append per file, one cluster for all of them).
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
import yaml
from psycopg import sql
from rich import box
from rich.table import Table

from bench import data as benchdata
from bench.measure import Measured, measure
from ingest.runtime.paths import project_root

Say = Callable[[str], None]
EXECUTORS = ("local", "dask")
FILES = 8
WORKERS = 2
MB = 1e6


@dataclass(frozen=True)
class Input:
    """One benchmark input: a file or a glob, and the rows it holds."""

    name: str
    path: str
    rows: int
    if_exists: str


@dataclass(frozen=True)
class Run:
    """One measured load."""

    input: str
    executor: str
    measured: Measured
    rows_in_table: int

    expected: int

    @property
    def ok(self) -> bool:
        return self.measured.returncode == 0 and self.rows_in_table == self.expected


def synthetic_glob(folder: Path, rows: int, files: int = FILES) -> Input:
    """The synthetic table's rows cut into `files` Parquet files, generated once and cached."""
    target = folder / f"synthetic-{rows}-x{files}"
    target.mkdir(parents=True, exist_ok=True)
    per_file = -(-rows // files)
    for index in range(files):
        path = target / f"part-{index}.parquet"
        if path.exists():
            continue
        start, count = index * per_file, min(per_file, rows - index * per_file)
        partial = path.with_name(f".{path.name}.partial")
        with pq.ParquetWriter(partial, benchdata.SYNTHETIC_SCHEMA, compression="snappy") as out:
            step = benchdata.BATCH_ROWS
            for number, first in enumerate(range(start, start + count, step)):
                batch = benchdata.synthetic_batch(
                    first, min(step, start + count - first), index * 1000 + number
                )
                out.write_table(batch, row_group_size=step)
        partial.replace(path)
    return Input(f"synthetic-{rows}-x{files}", str(target / "part-*.parquet"), rows, "append")


def _config(work: Path, given: Input, executor: str, schema: str, table: str) -> Path:
    path = work / "configs" / f"{table}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {
        "database": {"schema": schema, "metadata_schema": f"{schema}_meta"},
        "executor": executor,
        "dask": {"workers": WORKERS},
        "sources": {
            table: {
                "input_path": given.path,
                "if_table_exists": given.if_exists,
                "validation_data": {"sample_size": 0.01},
            }
        },
    }
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


def _one(
    conn: psycopg.Connection[Any], url: str, work: Path, given: Input, executor: str, schema: str
) -> Run:
    table = f"bench_{executor}"
    ident = sql.Identifier(schema, table)
    conn.execute(sql.SQL("drop table if exists {} cascade").format(ident))
    meta = sql.Identifier(f"{schema}_meta")  # a fresh ledger: no file is skipped as loaded
    conn.execute(sql.SQL("drop schema if exists {} cascade").format(meta))
    conn.execute("checkpoint")
    config = _config(work, given, executor, schema, table)
    argv = [sys.executable, "-m", "invoke", "ingest", "--config", str(config), "--json"]
    got = measure(
        argv,
        cwd=project_root(),
        env={**os.environ, "DATABASE_URL": url},
        stderr_path=work / "logs" / f"{given.name}-{executor}.stderr",
    )
    count = sql.SQL("select count(*) from {}").format(ident)
    row = conn.execute(count).fetchone() if got.returncode == 0 else None
    conn.execute(sql.SQL("drop table if exists {} cascade").format(ident))
    return Run(given.name, executor, got, int(row[0]) if row else 0, given.rows)


def run(url: str, inputs: Sequence[Input], work: Path, repeat: int, log: Say) -> list[Run]:
    """Load every input with each executor, alternated, `repeat` times; measure each load."""
    (work / "logs").mkdir(parents=True, exist_ok=True)
    schema = "bench_dask"
    runs: list[Run] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
        for given in inputs:
            for round_ in range(repeat):
                for executor in EXECUTORS:
                    done = _one(conn, url, work, given, executor, schema)
                    runs.append(done)
                    m = done.measured
                    failed = "" if done.ok else f"; FAILED: {m.stderr_tail[-300:]}"
                    log(
                        f"{given.name} {executor} #{round_ + 1}: {m.wall_s:.1f} s wall, "
                        f"{m.cpu_s:.1f} CPU-s, tree peak {m.peak_rss_bytes / MB:,.0f} MB, "
                        f"largest process {m.maxrss_bytes / MB:,.0f} MB, "
                        f"{done.rows_in_table:,} rows{failed}"
                    )
    return runs


def table(runs: Sequence[Run]) -> Table:
    """Medians per input and executor, and dask's ratios against local."""
    out = Table(box=box.SIMPLE)
    for name in ("input", "executor", "wall s", "CPU s", "tree peak MB", "max process MB",
                 "rows", "wall/local", "CPU/local", "max MB/local"):  # fmt: skip
        out.add_column(name)
    for name in dict.fromkeys(r.input for r in runs):
        medians = {ex: _medians([r for r in runs if r.input == name and r.executor == ex])
                   for ex in EXECUTORS}  # fmt: skip
        base = medians["local"]
        for ex, m in medians.items():
            ratios = [f"{m[k] / base[k]:.2f}" if base[k] else "" for k in ("wall", "cpu", "max")]
            out.add_row(name, ex, f"{m['wall']:.1f}", f"{m['cpu']:.1f}", f"{m['tree']:,.0f}",
                        f"{m['max']:,.0f}", f"{int(m['rows']):,}", *ratios)  # fmt: skip
    return out


def _medians(runs: Sequence[Run]) -> dict[str, float]:
    ok = [r for r in runs if r.ok] or list(runs)
    return {
        "wall": statistics.median(r.measured.wall_s for r in ok),
        "cpu": statistics.median(r.measured.cpu_s for r in ok),
        "tree": statistics.median(r.measured.peak_rss_bytes / MB for r in ok),
        "max": statistics.median(r.measured.maxrss_bytes / MB for r in ok),
        "rows": min(r.rows_in_table for r in ok),
    }
