"""A killed staged load resumes where it stopped; what cannot resume is dropped, and said so."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from launch import command
from psycopg import sql
from rich.console import Console

from ingest import load_config, run_source
from ingest.demo import employees
from ingest.errors import BadRowsOverLimit
from ingest.runtime import hooks
from ingest.state import ledger

Conn = psycopg.Connection[tuple[object, ...]]
ROOT = Path(__file__).resolve().parents[2]
ROWS, PARTITION_ROWS = 40_000, 5_000  # 8 partitions
PARTITIONS = ROWS // PARTITION_ROWS


def _config(tmp_path: Path, data: Path, schema: str, url: str, name: str, extra: str = "") -> Path:
    path = tmp_path / f"{name}.yml"
    path.write_text(
        f"path: {{input_path: '{data}'}}\n"
        f"database: {{table_name: {name}, if_table_exists: replace, schema: {schema},"
        f" metadata_schema: {schema}, url: '{url}', workers: 2{extra}}}\n"
        f"partition_rows: {PARTITION_ROWS}\n"
    )
    return path


def _data(path: Path, seed: int = 3) -> Path:
    employees(ROWS, seed=seed).write_parquet(path, row_group_size=PARTITION_ROWS // 2)
    return path


def _state(conn: Conn, schema: str, table: str) -> tuple[int, str]:
    """The table's row count and a checksum of its rows (without the lineage columns)."""
    row = conn.execute(
        sql.SQL(
            "select count(*), md5(string_agg(r, '|' order by r)) from"
            " (select (to_jsonb(t) - '_loaded_at' - '_run_id')::text as r from {} t) s"
        ).format(sql.Identifier(schema, table))
    ).fetchone()
    assert row is not None
    return int(str(row[0])), str(row[1])


def _kill_after_a_partition(config: Path) -> None:
    """Run the load in a child and SIGKILL it once a partition is committed."""
    proc = subprocess.Popen(
        command(config, "partition"), cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "failpoint partition reached" in line:
            break
    else:
        pytest.fail(f"the run never staged a partition:\n{''.join(seen)}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _claims(conn: Conn, schema: str) -> int:
    row = conn.execute(
        sql.SQL("select count(*) from {}").format(sql.Identifier(schema, "partitions"))
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def _staging_tables(conn: Conn, schema: str) -> int:
    row = conn.execute(
        "select count(*) from pg_tables where schemaname = %s and strpos(tablename, '__stg_') > 0",
        (schema,),
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def _run(config: Path) -> tuple[str, int]:
    """Load in this process: its log, and how many partitions it staged itself."""
    staged: list[str] = []
    remove = hooks.register("partition", staged.append)
    out = io.StringIO()
    try:
        report = run_source(load_config(config), console=Console(file=out), progress=False)
    finally:
        remove()
    assert report.status == "success"
    return out.getvalue(), len(staged)


@pytest.fixture
def killed(tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn) -> Iterator[Path]:
    """A config whose load replaced `emp` once, then was killed with some partitions staged."""
    run_source(
        load_config(_config(tmp_path, _data(tmp_path / "old.parquet", 1), pg_schema,
                            database_url, "emp")),
        progress=False,
    )  # fmt: skip
    before = _state(pg_conn, pg_schema, "emp")
    config = _config(tmp_path, _data(tmp_path / "new.parquet"), pg_schema, database_url, "emp")
    _kill_after_a_partition(config)
    assert _state(pg_conn, pg_schema, "emp") == before  # the target is as it was
    yield config


def _clean_load(tmp_path: Path, url: str, data: Path) -> tuple[int, str]:
    schema = f"t_{uuid.uuid4().hex[:10]}"
    try:
        run_source(load_config(_config(tmp_path, data, schema, url, "clean")), progress=False)
        with psycopg.connect(url) as conn:
            return _state(conn, schema, "clean")
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))


def test_a_killed_load_resumes_only_its_missing_partitions(
    killed: Path, tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    done = _claims(pg_conn, pg_schema)
    assert 1 <= done < PARTITIONS
    log, staged = _run(killed)
    assert f"{done} of {PARTITIONS} partitions already loaded" in log
    assert staged == PARTITIONS - done
    clean = _clean_load(tmp_path, database_url, tmp_path / "new.parquet")
    assert _state(pg_conn, pg_schema, "emp") == clean
    assert clean[0] == ROWS
    assert (_claims(pg_conn, pg_schema), _staging_tables(pg_conn, pg_schema)) == (0, 0)
    runs = [r.status for r in ledger.recent_runs(pg_conn, pg_schema)]
    assert runs == ["success", "success"]  # the resumed run finished the killed one


def test_restart_drops_what_the_killed_load_staged(
    killed: Path, pg_schema: str, pg_conn: Conn
) -> None:
    staged: list[str] = []
    remove = hooks.register("partition", staged.append)
    try:
        run_source(load_config(killed), restart=True, progress=False)
    finally:
        remove()
    assert len(staged) == PARTITIONS
    assert _state(pg_conn, pg_schema, "emp")[0] == ROWS
    errors = [r.error or "" for r in ledger.recent_runs(pg_conn, pg_schema)]
    assert any(e.startswith("staging dropped (--restart)") for e in errors)


def test_a_changed_file_never_resumes(
    killed: Path, tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    _data(tmp_path / "new.parquet", seed=5)  # other content at the same path
    log, staged = _run(killed)
    assert "the file changed since" in log and "resuming" not in log
    assert staged == PARTITIONS
    clean = _clean_load(tmp_path, database_url, tmp_path / "new.parquet")
    assert _state(pg_conn, pg_schema, "emp") == clean


def test_old_leftovers_are_dropped_and_shown_in_runs(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    age = ", resume_max_age_hours: 0.0003"  # about a second
    first = _config(tmp_path, _data(tmp_path / "a.parquet"), pg_schema, database_url, "a", age)
    _kill_after_a_partition(first)
    assert _staging_tables(pg_conn, pg_schema) == 1
    time.sleep(1.5)
    other = _config(tmp_path, tmp_path / "a.parquet", pg_schema, database_url, "b", age)
    log, _ = _run(other)  # another table's load sweeps the old leftovers of every table
    assert "older than 0.0003 h" in log
    assert _staging_tables(pg_conn, pg_schema) == 0
    shown = io.StringIO()
    Console(file=shown, width=400).print(ledger.runs_table(ledger.recent_runs(pg_conn, pg_schema)))
    assert "staging dropped (older than 0.0003 h)" in shown.getvalue()


def test_a_partition_over_the_bad_row_limit_aborts_the_run(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    data = tmp_path / "bad.parquet"
    frame = employees(ROWS, seed=3)
    ages = [-1 if 20_000 <= i < 20_050 else a for i, a in enumerate(frame["Age"].to_list())]
    frame.with_columns(Age=frame["Age"].__class__("Age", ages)).write_parquet(
        data, row_group_size=PARTITION_ROWS
    )
    config = _config(tmp_path, data, pg_schema, database_url, "emp")
    config.write_text(
        config.read_text() + "validation_data: {max_bad_rows: 10, checks: {Age: {ge: 0}}}\n"
    )
    with pytest.raises(BadRowsOverLimit, match="max_bad_rows=10"):
        run_source(load_config(config), progress=False)
    exists = pg_conn.execute("select to_regclass(%s)", (f"{pg_schema}.emp",)).fetchone()
    assert exists == (None,)  # never created: the target is as it was
    rejected = pg_conn.execute(
        sql.SQL("select count(*) from {}").format(sql.Identifier(pg_schema, "emp__rejected"))
    ).fetchone()
    assert rejected is not None and int(str(rejected[0])) >= 11
    assert (_claims(pg_conn, pg_schema), _staging_tables(pg_conn, pg_schema)) == (0, 0)
