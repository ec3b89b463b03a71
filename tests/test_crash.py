"""Crash safety: a run killed at any point leaves the target whole, and the next run succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from configs import write_config
from launch import command
from psycopg import sql

from ingest import load_config, run_source
from ingest.demo import employees

Conn = psycopg.Connection[tuple[object, ...]]
ROOT = Path(__file__).resolve().parent.parent


def old_then_new(tmp_path: Path, url: str, schema: str, rows: int) -> Path:
    """Load 1,000 employees into `emp`; return the config replacing them with `rows` new ones."""
    old = tmp_path / "old.parquet"
    employees(1_000).write_parquet(old)
    run_source(load_config(write_config(tmp_path, old, schema, url, "old")), progress=False)
    new = tmp_path / "new.parquet"
    employees(rows, seed=3).write_parquet(new)
    return write_config(tmp_path, new, schema, url, "new")


def start(config: Path, failpoint: str | None = None) -> subprocess.Popen[str]:
    """Run `invoke ingest --json` in a child that holds the run at `failpoint`, if given."""
    return subprocess.Popen(
        command(config, failpoint),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(proc: subprocess.Popen[str], text: str, timeout: float = 60) -> None:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    for line in proc.stderr:
        if text in line:
            return
        if time.monotonic() > deadline:
            break
    proc.kill()
    pytest.fail(f"the run never printed {text!r}")


def table_state(conn: Conn, schema: str) -> tuple[int, int]:
    row = conn.execute(
        sql.SQL("select count(*), count(distinct _run_id) from {}").format(
            sql.Identifier(schema, "emp")
        )
    ).fetchone()
    assert row is not None
    return int(str(row[0])), int(str(row[1]))


def statuses(conn: Conn, schema: str) -> list[str]:
    rows = conn.execute(
        sql.SQL("select status from {} order by started_at").format(sql.Identifier(schema, "runs"))
    ).fetchall()
    return [str(r[0]) for r in rows]


@pytest.mark.parametrize("point", ["staged", "copying", "swapping"])
def test_sigkill_leaves_the_old_table_and_the_rerun_succeeds(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn, point: str
) -> None:
    """SIGKILL after staging, mid-COPY or inside the swap: old table intact, rerun loads."""
    config = old_then_new(tmp_path, database_url, pg_schema, 200_000)

    proc = start(config, point)
    wait_for(proc, f"failpoint {point} reached")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    assert table_state(pg_conn, pg_schema) == (1_000, 1)
    report = run_source(load_config(config), progress=False)
    assert report.status == "success"
    assert table_state(pg_conn, pg_schema) == (200_000, 1)
    leftovers = pg_conn.execute(
        "select count(*) from pg_tables where schemaname = %s and strpos(tablename, '__stg_') > 0",
        (pg_schema,),
    ).fetchone()
    assert leftovers == (0,)
    assert statuses(pg_conn, pg_schema) == ["success", "killed", "success"]


def test_concurrent_replaces_serialise(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """Two replaces of one table at once both succeed, one after the other; one table remains."""
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    employees(150_000, seed=1).write_parquet(first)
    employees(100_000, seed=2).write_parquet(second)
    procs = [
        start(write_config(tmp_path, data, pg_schema, database_url, data.stem))
        for data in (first, second)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-500:] for o in outputs]
    count, runs = table_state(pg_conn, pg_schema)
    assert runs == 1 and count in (150_000, 100_000)
    assert statuses(pg_conn, pg_schema) == ["success", "success"]
    spans = pg_conn.execute(
        sql.SQL("select started_at, finished_at from {} order by started_at").format(
            sql.Identifier(pg_schema, "runs")
        )
    ).fetchall()
    assert spans[1][0] >= spans[0][1]  # the second run started only after the first finished


@pytest.mark.parametrize(("workers", "visible"), [(1, 0), (2, 1)])
def test_one_connection_stages_inside_its_own_transaction(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn, workers: int, visible: int
) -> None:
    """Mid-COPY, one connection's staging table is invisible to others; two connections' is not.

    One connection creates its table in the COPY's own transaction (so a crash leaves nothing);
    several COPY into a table created beforehand. Either way a kill leaves no staging table.
    """
    data = tmp_path / "new.parquet"
    employees(200_000, seed=5).write_parquet(data)
    config = write_config(tmp_path, data, pg_schema, database_url, workers=workers)

    proc = start(config, "copying")
    wait_for(proc, "failpoint copying reached")
    staged = pg_conn.execute(
        "select count(*) from pg_tables where schemaname = %s and strpos(tablename, '__stg_') > 0",
        (pg_schema,),
    ).fetchone()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    assert staged == (visible,)
    report = run_source(load_config(config), progress=False)
    assert (report.status, report.workers) == ("success", workers)
    assert table_state(pg_conn, pg_schema) == (200_000, 1)


@pytest.mark.parametrize(("workers", "direct"), [(1, True), (2, False)])
def test_one_connection_appends_straight_into_the_target(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn, workers: int, direct: bool
) -> None:
    """Mid-COPY, one connection's append writes into the target itself, unseen until it commits.

    Several connections stage and INSERT at the end instead. A kill leaves the old rows as
    they were either way, and the rerun appends once.
    """
    old = tmp_path / "old.parquet"
    employees(1_000).write_parquet(old)
    run_source(
        load_config(write_config(tmp_path, old, pg_schema, database_url, "old")), progress=False
    )
    new = tmp_path / "new.parquet"
    employees(200_000, seed=6).write_parquet(new)
    config = write_config(
        tmp_path, new, pg_schema, database_url, "new", workers, if_exists="append"
    )

    proc = start(config, "copying")
    wait_for(proc, "failpoint copying reached")
    writers = pg_conn.execute(
        "select count(*) from pg_locks l join pg_class c on c.oid = l.relation"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = 'emp' and l.mode = 'RowExclusiveLock'",
        (pg_schema,),
    ).fetchone()
    mid_copy = table_state(pg_conn, pg_schema)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    assert writers == (1 if direct else 0,)
    assert mid_copy == (1_000, 1)
    assert table_state(pg_conn, pg_schema) == (1_000, 1)
    report = run_source(load_config(config), progress=False)
    assert (report.status, report.rows_loaded) == ("success", 200_000)
    assert table_state(pg_conn, pg_schema) == (201_000, 2)


def test_ctrl_c_says_nothing_was_changed_and_marks_the_run_killed(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """SIGINT mid-load: one line saying the table is unchanged, exit 130, run marked killed."""
    proc = start(old_then_new(tmp_path, database_url, pg_schema, 50_000), "staged")
    wait_for(proc, "failpoint staged reached")
    os.kill(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in stderr
    assert f"interrupted: nothing was changed in {pg_schema}.emp; run marked killed" in stderr
    assert table_state(pg_conn, pg_schema) == (1_000, 1)
    assert statuses(pg_conn, pg_schema)[-1] == "killed"
