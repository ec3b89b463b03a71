"""The benchmark behind `invoke bench`: this project's ingest against `psql \\copy` and its peers.

The peers (bench/peers.py): DuckDB's postgres extension, ADBC's PostgreSQL driver, pgloader (run
once per benchmark, even under `--repeat`: it takes ~12x `\\copy`'s time), and this project's
ingest on its own embedded server (`wal_level=minimal`), beside its strategies on the shared one.

Every tool runs as a child process against the same PostgreSQL in one run, and each is measured
the same way: wall time, peak RSS of the whole process tree (psutil, polled every 50 ms, checked
against the kernel's `ru_maxrss` from `wait4`), client CPU seconds (user+sys of the tree), the
server's CPU seconds (the postmaster's children, when the server runs on this machine), the WAL it
wrote, and the rows really in the target table afterwards. Ratios are against `psql \\copy` of
the CSV measured in the same run, so they hold across machines better than seconds do. The CSV
is also loaded as .csv.gz and .csv.zst (bench/archives.py).

Reproducing the original design's 244M-row run (5 columns: id, name, age, salary, department):

    python -m bench.run --rows 244000000        # `invoke bench` runs the same function

Disk cost, measured at 2,000,000 rows and scaled by 122 (so ~45-50 GB free for the full run):
- the Parquet file: 12.6 bytes a row, ~3.1 GB; the CSV: 43.9 bytes a row, ~10.7 GB; both cached
  under `.pipeline/bench/data/synthetic-244000000/` and reused by later runs;
- one loaded table: 74 bytes a row, ~18 GB, whichever tool loads it (the ingest's `_loaded_at`
  and `_run_id` are constant defaults kept once in the catalogue, not in every row);
- WAL: ~0 for every tool under `wal_level=minimal` (the embedded server: each creates its table in
  the loading transaction); 70-80% of the table's size under `wal_level=replica` (the Debian
  default). WAL past `max_wal_size` (1 GB default, 4 GB on the embedded server) is recycled at
  checkpoints, so it costs that much disk, not its total.
Tables are loaded, counted and dropped one at a time: peak disk is the two files, one table and
the WAL. Generating the files takes ~4 minutes (~1M rows/s) in ~320 MB whatever the row count;
each load of 244M rows takes 2.5 to 10 minutes on 2 cores, by tool and machine, so the seven
take about an hour.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench import data as benchdata
from bench import remote as benchs3
from bench.checks import checks
from bench.commands import Command, target
from bench.commands import commands as build_commands
from bench.data import Dataset
from bench.measure import (
    BenchReport,
    BenchRow,
    machine_info,
    measure,
    psql_binary,
    server_cpu,
    server_process,
)
from ingest.pg import embedded
from ingest.runtime.paths import state_dir

Say = Callable[[str], None]
STRATEGIES = ("auto", "eager", "lazy", "streaming")
MB = 1e6

__all__ = ["STRATEGIES", "BenchReport", "BenchRow", "bench_dir", "run_bench"]


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def bench_dir() -> Path:
    """The benchmark's folder: cached inputs, configs, logs and results."""
    return state_dir() / "bench"


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lsn(conn: psycopg.Connection[Any]) -> str | None:
    try:
        row = conn.execute("select pg_current_wal_lsn()::text").fetchone()
        return str(row[0]) if row else None
    except psycopg.Error:
        return None


def _drop(conn: psycopg.Connection[Any], schema: str, table: str) -> None:
    conn.execute(sql.SQL("drop table if exists {} cascade").format(sql.Identifier(schema, table)))


def _run_one(
    conn: psycopg.Connection[Any],
    cmd: Command,
    data: Dataset,
    schema: str,
    logs: Path,
    postmaster: Any,
) -> BenchRow:
    """Measure one command, then count what reached its table, record its size and drop it."""
    _drop(conn, schema, cmd.table)
    try:  # start every command with clean buffers, not the previous load's dirty pages
        conn.execute("checkpoint")
    except psycopg.Error:
        pass
    lsn, cpu = _lsn(conn), server_cpu(postmaster)
    got = measure(
        cmd.argv,
        cwd=cmd.cwd,
        env=cmd.env,
        stdin=cmd.stdin,
        stderr_path=logs / f"{cmd.table}.stderr",
    )
    cpu_after, lsn_after = server_cpu(postmaster), _lsn(conn)
    wal = None
    if lsn and lsn_after:
        row = conn.execute("select pg_wal_lsn_diff(%s, %s)", [lsn_after, lsn]).fetchone()
        wal = float(row[0]) / MB if row else None
    count: int | None = None
    size: float | None = None
    if conn.execute("select to_regclass(%s)", [target(schema, cmd.table)]).fetchone() != (None,):
        ident = sql.Identifier(schema, cmd.table)
        row = conn.execute(sql.SQL("select count(*) from {}").format(ident)).fetchone()
        count = int(row[0]) if row else None
        row = conn.execute(
            "select pg_total_relation_size(%s::regclass)", [target(schema, cmd.table)]
        ).fetchone()
        size = int(row[0]) / MB if row else None
        _drop(conn, schema, cmd.table)
    reported: dict[str, Any] = {}
    if cmd.tool.startswith("ingest"):
        lines = [x for x in got.stdout.splitlines() if x.startswith("{")]
        try:
            reported = json.loads(lines[-1]) if lines else {}
        except json.JSONDecodeError:
            reported = {}
    strategy = cmd.strategy
    if reported.get("strategy") and reported["strategy"] != cmd.strategy:
        strategy = f"{cmd.strategy}→{reported['strategy']}"
    ok = got.returncode == 0 and count == data.rows
    error = ""
    if not ok:
        why = f"exit {got.returncode}" if got.returncode else f"{count} rows, not {data.rows}"
        error = f"{why}: {got.stderr_tail.strip()}"
    return BenchRow(
        tool=cmd.tool,
        input=cmd.input,
        strategy=strategy,
        table=cmd.table,
        wall_s=round(got.wall_s, 3),
        rows_per_s=round(data.rows / got.wall_s, 1) if ok else None,
        peak_rss_mb=round(got.peak_rss_bytes / MB, 1),
        maxrss_mb=round(got.maxrss_bytes / MB, 1),
        cpu_s=round(got.cpu_s, 2),
        db_cpu_s=None if cpu is None or cpu_after is None else round(cpu_after - cpu, 2),
        ratio=None,
        rows_expected=data.rows,
        rows_in_table=count,
        ok=ok,
        returncode=got.returncode,
        table_mb=None if size is None else round(size, 1),
        wal_mb=None if wal is None else round(wal, 1),
        error=error,
        reported=reported,
    )


def _median(tries: Sequence[BenchRow]) -> BenchRow:
    """The run with the median wall time, holding every try's wall time; a failure wins."""
    walls = tuple(t.wall_s for t in tries)
    failed = [t for t in tries if not t.ok]
    chosen = failed[0] if failed else sorted(tries, key=lambda t: t.wall_s)[len(tries) // 2]
    return replace(chosen, walls_s=walls)


def _start_embedded(
    stack: ExitStack, work: Path, schema: str, log: Say
) -> tuple[psycopg.Connection[Any], str]:
    """Start a private embedded server for the run (stopped when the run ends); connect to it."""
    home = work / "embedded-home"
    log("starting the embedded PostgreSQL (wal_level=minimal) for its row")
    server = embedded.start(home, log=log)
    stack.callback(embedded.stop, home)
    conn = stack.enter_context(psycopg.connect(server.url, autocommit=True))
    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
    return conn, server.url


def _rounds(
    commands: Sequence[Command],
    servers: Mapping[str, tuple[psycopg.Connection[Any], Any]],
    data: Dataset,
    schema: str,
    logs: Path,
    repeat: int,
    log: Say,
) -> list[BenchRow]:
    """Every command once per round, alternated, `repeat` rounds; each command's median run."""
    tries: list[list[BenchRow]] = [[] for _ in commands]
    for round_ in range(repeat):
        for cmd, runs in zip(commands, tries, strict=True):
            if cmd.once and round_:
                continue
            note = " (once: it takes minutes, not repeated)" if cmd.once and repeat > 1 else ""
            log(f"{cmd.tool} {cmd.input} {cmd.strategy}: loading {data.rows:,} rows{note}")
            conn, postmaster = servers[cmd.server]
            row = _run_one(conn, cmd, data, schema, logs, postmaster)
            log(
                f"  {'ok' if row.ok else 'FAILED'} in {row.wall_s:.1f} s, "
                f"peak {row.peak_rss_mb:,.0f} MB" + ("" if row.ok else f"; {row.error[-300:]}")
            )
            runs.append(row)
    return [_median(runs) for runs in tries]


def run_bench(
    database_url: str,
    *,
    scale: float = 1.0,
    rows: int | None = None,
    strategies: Sequence[str] = STRATEGIES,
    include_csv: bool = True,
    include_compressed: bool = True,
    workdir: Path | None = None,
    log: Say = _say,
    schema: str = "bench",
    repeat: int = 1,
    s3: bool = False,
    embedded_server: bool = False,
) -> BenchReport:
    """Load one dataset with `psql \\copy`, DuckDB and this project's ingest; measure each.

    Args:
        database_url: The PostgreSQL every tool loads into.
        scale: TPC-H scale factor of lineitem (1 = 6,001,215 rows).
        rows: Use the 5-column synthetic table with this many rows instead of lineitem.
        strategies: Ingest strategies to run on the Parquet file.
        include_csv: Also ingest the CSV with the auto strategy.
        include_compressed: Also load the CSV as .csv.gz and .csv.zst: `zcat | psql \\copy`,
            DuckDB's `read_csv` and the ingest (auto) of each archive.
        workdir: Cache and scratch folder (default `bench_dir()`).
        log: Receives one line per step.
        schema: Schema of the benchmark's tables (created if missing; dropped if created here).
        s3: Also load the Parquet file from a local S3 server (moto), with ingest and DuckDB.
        repeat: Run every command this many times, alternated, and keep each one's median run
            (pgloader runs once whatever this says).
        embedded_server: Also load with `auto` into a private embedded server (wal_level=minimal).

    Returns:
        The report; failed commands are rows with `ok=False` and their stderr, not exceptions.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; pick from {', '.join(STRATEGIES)}")
    work = workdir or bench_dir()
    started = _stamp()
    data = (
        benchdata.synthetic(work / "data", rows, log=log)
        if rows is not None
        else benchdata.lineitem(work / "data", scale, log=log)
    )
    psql, psql_from = psql_binary()
    logs = work / "logs" / started.replace(":", "")
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        conn = stack.enter_context(psycopg.connect(database_url, autocommit=True))
        machine = machine_info(conn, psql, psql_from)
        load_before = os.getloadavg()[0]
        servers = {"shared": (conn, server_process(conn))}
        found = conn.execute("select 1 from pg_namespace where nspname = %s", [schema]).fetchone()
        conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
        url = None
        if embedded_server:
            own, url = _start_embedded(stack, work, schema, log)
            servers["embedded"] = (own, server_process(own))
        commands = build_commands(
            data, database_url, schema, strategies, include_csv, work, psql, url, include_compressed
        )
        if s3:
            served = stack.enter_context(benchs3.local_s3(data.parquet, logs))
            duckdb = next(c for c in commands if c.tool == "duckdb")
            commands += benchs3.commands(served, duckdb, database_url, schema, work)
        try:
            measured = _rounds(commands, servers, data, schema, logs, repeat, log)
        finally:
            for cmd in commands:
                _drop(servers[cmd.server][0], schema, cmd.table)
            if found is None:
                conn.execute(
                    sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema))
                )
    final = _against_first(measured)
    # Other work on the machine skews every figure: keep the load beside them.
    machine |= {"load_avg_1m_before": load_before, "load_avg_1m_after": os.getloadavg()[0]}
    return BenchReport(started, _described(data), machine, final, repeat, checks(final))


def _against_first(measured: Sequence[BenchRow]) -> tuple[BenchRow, ...]:
    """Each row with its wall time as a ratio of the first row's (`psql \\copy`)."""
    base = measured[0].wall_s if measured and measured[0].ok else None
    return tuple(
        replace(r, ratio=round(r.wall_s / base, 2) if base and r.ok else None) for r in measured
    )


def _described(data: Dataset) -> dict[str, Any]:
    return {
        "name": data.name,
        "rows": data.rows,
        "parquet": str(data.parquet),
        "parquet_bytes": data.parquet_bytes,
        "csv": str(data.csv),
        "csv_bytes": data.csv_bytes,
    }


def _main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from the command line: `python -m bench.run --scale 1`."""
    import argparse

    from rich.console import Console

    from ingest.pg.db import resolve_url

    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--scale", type=float, default=1.0, help="TPC-H scale factor")
    parser.add_argument("--rows", type=int, default=None, help="synthetic rows instead of TPC-H")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--no-csv", action="store_true", help="skip the ingest of the CSV")
    parser.add_argument("--no-compressed", action="store_true", help="skip .csv.gz/.csv.zst")
    parser.add_argument("--repeat", type=int, default=1, help="runs per command (median kept)")
    parser.add_argument("--no-s3", action="store_true", help="skip the loads from local S3")
    parser.add_argument(
        "--no-embedded", action="store_true", help="skip the row on the embedded server"
    )
    args = parser.parse_args(argv)
    err = Console(stderr=True)
    report = run_bench(
        resolve_url(None, err.print),
        scale=args.scale,
        rows=args.rows,
        strategies=tuple(args.strategies.split(",")),
        include_csv=not args.no_csv,
        include_compressed=not args.no_compressed,
        log=err.print,
        repeat=args.repeat,
        s3=not args.no_s3,
        embedded_server=not args.no_embedded,
    )
    Console().print(report.table())
    for line in report.checks:
        Console().print(line, highlight=False)
    err.print(f"results: {report.write(bench_dir())}")
    return 0 if all(r.ok for r in report.rows) else 1


if __name__ == "__main__":
    sys.exit(_main())
