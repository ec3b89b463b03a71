"""Merges killed mid-way leave the table as it was; two merges at once both land, in turn."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import polars as pl
import psycopg
import pytest
import yaml
from psycopg import sql

from ingest import load_config, run_source
from ingest.demo import employees
from tests.test_crash import start, statuses, wait_for

Conn = psycopg.Connection[tuple[object, ...]]
KEY = "Employee_ID"


def merge_config(
    tmp_path: Path, data: Path, schema: str, url: str, name: str, strategy: str = "upsert"
) -> Path:
    path = tmp_path / f"{name}.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "path": {"input_path": str(data)},
                "database": {
                    "table_name": "emp",
                    "if_table_exists": "merge",
                    "primary_key": [KEY],
                    "merge": {"strategy": strategy},
                    "schema": schema,
                    "metadata_schema": schema,
                    "url": url,
                },
            }
        )
    )
    return path


def fingerprint(conn: Conn, schema: str) -> tuple[object, ...]:
    """Row count and a hash of every row, lineage included, in key order."""
    row = conn.execute(
        sql.SQL("select count(*), md5(string_agg(t::text, '|' order by t.{})) from {} t").format(
            sql.Identifier(KEY), sql.Identifier(schema, "emp")
        )
    ).fetchone()
    assert row is not None
    return tuple(row)


def table_frame(conn: Conn, schema: str, columns: list[str]) -> list[tuple[object, ...]]:
    query = sql.SQL("select {} from {} order by {}").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.Identifier(schema, "emp"),
        sql.Identifier(KEY),
    )
    return [tuple(r) for r in conn.execute(query).fetchall()]


@pytest.mark.parametrize(
    ("point", "strategy"),
    [("copying", "upsert"), ("swapping", "upsert"), ("swapping", "delete-insert")],
)
def test_sigkill_mid_merge_leaves_the_table_and_the_rerun_merges(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn, point: str, strategy: str
) -> None:
    """SIGKILL mid-COPY or after the merge's SQL but before COMMIT: the table is as it was."""
    old = employees(20_000, seed=1)
    old.write_parquet(tmp_path / "old.parquet")
    first = merge_config(tmp_path, tmp_path / "old.parquet", pg_schema, database_url, "old")
    run_source(load_config(first), progress=False)
    before = fingerprint(pg_conn, pg_schema)
    new = employees(150_000, seed=2, start_id=10_001)  # 10,000 keys changed, 140,000 new
    new.write_parquet(tmp_path / "new.parquet")
    config = merge_config(
        tmp_path, tmp_path / "new.parquet", pg_schema, database_url, "new", strategy
    )

    proc = start(config, point)
    wait_for(proc, f"failpoint {point} reached", timeout=120)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    assert fingerprint(pg_conn, pg_schema) == before
    report = run_source(load_config(config), progress=False)
    assert report.merge["inserted"] == 140_000 and report.merge["updated"] == 10_000
    want = pl.concat([old.join(new, on=KEY, how="anti"), new]).sort(KEY)
    assert table_frame(pg_conn, pg_schema, want.columns) == [tuple(r) for r in want.rows()]
    assert statuses(pg_conn, pg_schema) == ["success", "killed", "success"]


def test_two_merges_at_once_both_land(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """Two merges of one table at once: the second waits for the first; both changes hold."""
    old = employees(10_000, seed=1)
    old.write_parquet(tmp_path / "old.parquet")
    run_source(
        load_config(merge_config(tmp_path, tmp_path / "old.parquet", pg_schema, database_url, "o")),
        progress=False,
    )
    # Disjoint keys: 5,001-10,000 changed and 10,001-60,000 new; 60,001-110,000 new.
    parts = [employees(55_000, seed=2, start_id=5_001), employees(50_000, seed=3, start_id=60_001)]
    procs = []
    for i, part in enumerate(parts):
        part.write_parquet(tmp_path / f"p{i}.parquet")
        procs.append(
            start(
                merge_config(tmp_path, tmp_path / f"p{i}.parquet", pg_schema, database_url, f"p{i}")
            )
        )
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-800:] for o in outputs]
    want = pl.concat([old.join(parts[0], on=KEY, how="anti"), *parts]).sort(KEY)
    assert table_frame(pg_conn, pg_schema, want.columns) == [tuple(r) for r in want.rows()]
    spans = pg_conn.execute(
        sql.SQL("select started_at, finished_at from {} order by started_at").format(
            sql.Identifier(pg_schema, "runs")
        )
    ).fetchall()
    assert len(spans) == 3 and spans[2][0] >= spans[1][1]  # one after the other
