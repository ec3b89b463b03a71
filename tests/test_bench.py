"""The benchmark harness: deterministic batched data, honest measurements, the two baselines."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import polars as pl
import psycopg
import pyarrow.parquet as pq
from rich.console import Console

from bench import data as benchdata
from bench.checks import checks
from bench.measure import BenchRow, measure
from bench.run import run_bench


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_synthetic_is_deterministic(tmp_path: Path) -> None:
    """The same row count gives byte-identical Parquet and CSV files."""
    first = benchdata.synthetic(tmp_path / "a", 25_000, batch_rows=10_000)
    second = benchdata.synthetic(tmp_path / "b", 25_000, batch_rows=10_000)
    assert _digest(first.parquet) == _digest(second.parquet)
    assert _digest(first.csv) == _digest(second.csv)


def test_synthetic_is_written_in_batches(tmp_path: Path) -> None:
    """30k rows in batches of 10k become three row groups, with ids 0..29999 in order."""
    data = benchdata.synthetic(tmp_path, 30_000, batch_rows=10_000)
    meta = pq.read_metadata(data.parquet)
    assert (meta.num_row_groups, meta.num_rows, data.rows) == (3, 30_000, 30_000)
    assert [meta.row_group(i).num_rows for i in range(3)] == [10_000] * 3
    frame = pl.read_parquet(data.parquet)
    assert frame["id"].to_list() == list(range(30_000))
    assert frame.schema == pl.Schema(
        {
            "id": pl.Int64,
            "name": pl.String,
            "age": pl.Int32,
            "salary": pl.Float64,
            "department": pl.String,
        }
    )
    assert frame["age"].min() >= 18 and frame["age"].max() <= 70  # type: ignore[operator]
    from_csv = pl.read_csv(data.csv, schema=frame.schema)
    assert from_csv.equals(frame)


def test_synthetic_is_reused_when_present(tmp_path: Path) -> None:
    """A second call finds the cached files and does not rewrite them."""
    data = benchdata.synthetic(tmp_path, 1_000)
    before = data.parquet.stat().st_mtime_ns
    again = benchdata.synthetic(tmp_path, 1_000)
    assert again.parquet.stat().st_mtime_ns == before


def test_measure_sees_a_child_allocating_200mb() -> None:
    """A child holding 200 MiB shows a peak RSS of at least 180 MB, CPU time and a wall time."""
    code = "import time; block = b'x' * (200 * 2**20); time.sleep(0.3)"
    got = measure([sys.executable, "-c", code])
    assert got.returncode == 0
    assert got.peak_rss_bytes >= 180e6
    assert got.maxrss_bytes >= 180e6
    assert got.peak_rss_bytes < 400e6  # the harness's own memory is not counted
    assert 0.3 <= got.wall_s < 10
    assert got.cpu_s > 0


def test_measure_reports_a_failure_with_its_stderr() -> None:
    """A failing command is a non-zero return code and the end of its stderr, not an exception."""
    got = measure([sys.executable, "-c", "import sys; sys.exit('boom at the end')"])
    assert got.returncode == 1
    assert "boom at the end" in got.stderr_tail


def test_baselines_load_every_row(database_url: str, pg_schema: str, tmp_path: Path) -> None:
    """\\copy and every peer load all 20,000 rows, alternated (pgloader once), tables dropped."""
    report = run_bench(
        database_url,
        rows=20_000,
        strategies=(),
        workdir=tmp_path,
        schema=pg_schema,
        repeat=2,
        log=lambda _: None,
        embedded_server=True,
    )
    by_tool = {r.tool: r for r in report.rows}
    tools = ["psql \\copy", "duckdb", "adbc", "pgloader", "ingest embedded"]
    assert list(by_tool) == tools  # .ci/run installs pgloader
    for row in report.rows:
        assert (row.ok, row.rows_in_table, row.rows_expected) == (True, 20_000, 20_000), row.error
        assert row.wall_s > 0 and row.peak_rss_mb > 0 and row.cpu_s > 0
        assert row.db_cpu_s is not None and row.db_cpu_s >= 0
        runs = 1 if row.tool == "pgloader" else 2
        assert len(row.walls_s) == runs and row.wall_s in row.walls_s
    assert by_tool["psql \\copy"].ratio == 1.0
    assert by_tool["ingest embedded"].reported["rows_loaded"] == 20_000
    saved = json.loads(report.write(tmp_path / "out").read_text())
    assert saved["dataset"]["rows"] == 20_000
    assert [r["tool"] for r in saved["rows"]] == tools
    assert (tmp_path / "out" / "latest.json").exists()
    with psycopg.connect(database_url, autocommit=True) as conn:
        left = conn.execute(
            "select count(*) from pg_tables where schemaname = %s", [pg_schema]
        ).fetchone()
    assert left == (0,)
    console = Console(record=True, width=200)
    console.print(report.table())
    assert "psql \\copy" in console.export_text()


def _row(tool: str, fmt: str, strategy: str, wall: float, peak: float, cpu: float) -> BenchRow:
    reported = {"estimate_mb": 1_000.0} if strategy == "eager" else {}
    return BenchRow(
        tool,
        fmt,
        strategy,
        "t",
        wall,
        1.0,
        peak,
        peak,
        cpu,
        1.0,
        None,
        10,
        10,
        True,
        0,
        None,
        None,
        reported=reported,
    )


def test_checks_judge_the_targets_on_the_rows() -> None:
    """The moved memory and speed targets: auto's peak, the eager estimate, speed and CPU."""
    rows = [
        _row("duckdb", "parquet", "-", 10.0, 200.0, 5.0),
        _row("ingest", "parquet", "auto→lazy", 9.0, 330.0, 3.9),
        _row("ingest", "csv", "auto→lazy", 12.0, 420.0, 6.0),
        _row("ingest", "parquet", "eager", 8.5, 1_300.0, 4.5),
    ]
    lines = checks(rows)
    assert lines[0].startswith("ok: auto (parquet") and "330 MB" in lines[0]
    assert lines[1].startswith("MISSED: auto (csv") and "420 MB" in lines[1]
    assert lines[2].startswith("MISSED: eager") and "30% off" in lines[2]
    assert lines[3].startswith("ok: auto (parquet) took 9.0 s") and "(eager) 8.5 s" in lines[3]
    assert lines[4].startswith("ok:") and "0.78x" in lines[4]
    slow = [*rows[:1], replace(rows[1], wall_s=9.5, cpu_s=4.5), *rows[2:]]
    assert checks(slow)[3].startswith("MISSED") and checks(slow)[4].startswith("MISSED")


def test_compressed_rows_load_every_row(database_url: str, pg_schema: str, tmp_path: Path) -> None:
    """.csv.gz and .csv.zst: zcat | psql \\copy, DuckDB and the ingest each load all rows."""
    report = run_bench(
        database_url,
        rows=20_000,
        strategies=("auto",),
        include_csv=False,
        workdir=tmp_path,
        schema=pg_schema,
        log=lambda _: None,
    )
    packed = [(r.tool, r.input, r.ok, r.rows_in_table) for r in report.rows if "csv." in r.input]
    assert packed == [
        (tool, f"csv.{suffix}", True, 20_000)
        for suffix in ("gz", "zst")
        for tool in ("zcat | psql \\copy", "duckdb")
    ] + [("ingest", "csv.gz", True, 20_000), ("ingest", "csv.zst", True, 20_000)]
    ingested = [r for r in report.rows if r.tool == "ingest" and "csv." in r.input]
    assert {r.strategy for r in ingested} == {"auto→streaming"}
