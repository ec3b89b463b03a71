"""The Dask executor on a real LocalCluster of worker processes and a real PostgreSQL."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest
from psycopg import sql

from ingest import load_config, run_source
from ingest.errors import BadRowsOverLimit, ConfigError
from ingest.executors.dask import Refused
from ingest.pg.target import Target, leftovers

distributed = pytest.importorskip("distributed")

Conn = psycopg.Connection[tuple[object, ...]]
ROWS = 120_000
GROUP_ROWS = 7_500  # 16 row groups: 8 partitions over 2 workers


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Two worker processes of one thread each, as the executor would start them."""
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
    ) as local:
        yield local


def numbers(path: Path, rows: int = ROWS, group_rows: int = GROUP_ROWS) -> Path:
    """A Parquet file of `rows` rows with a unique id, in many row groups."""
    frame = pl.DataFrame(
        {
            "id": pl.int_range(0, rows, eager=True),
            "amount": (pl.int_range(0, rows, eager=True) * 7 % 1000).cast(pl.Float64),
            "label": pl.Series([f"row {i}" for i in range(rows)]),
        }
    )
    frame.write_parquet(path, row_group_size=group_rows)
    return path


def config(
    tmp_path: Path,
    data: Path,
    schema: str,
    url: str,
    *,
    table: str,
    executor: str = "dask",
    address: str | None = None,
    if_exists: str = "replace",
    validation: str = "",
) -> Path:
    dask = f"  address: {address}\n" if address else "  workers: 2\n"
    path = tmp_path / f"{table}-{executor}.yml"
    path.write_text(
        f"database:\n  url: '{url}'\n  schema: {schema}\n  metadata_schema: {schema}\n"
        f"executor: {executor}\ndask:\n{dask}"
        f"sources:\n  {table}:\n    input_path: '{data}'\n    if_table_exists: {if_exists}\n"
        f"{validation}"
    )
    return path


def fingerprint(conn: Conn, schema: str, table: str, columns: str) -> tuple[Any, ...]:
    """Rows, distinct ids and a checksum over the loaded columns (not the lineage ones)."""
    ident = sql.Identifier(schema, table)
    query = sql.SQL(
        "select count(*), count(distinct id), md5(string_agg(row({})::text, '|' order by id))"
        " from {}"
    ).format(sql.SQL(columns), ident)
    row = conn.execute(query).fetchone()
    assert row is not None
    return tuple(row)


def test_a_dask_load_equals_the_local_one(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn
) -> None:
    """On a LocalCluster the executor starts itself, the table equals the local executor's."""
    data = numbers(tmp_path / "numbers.parquet")
    on_dask = run_source(load_config(config(tmp_path, data, pg_schema, database_url, table="a")))
    local = config(tmp_path, data, pg_schema, database_url, table="b", executor="local")
    run_source(load_config(local))
    assert on_dask.rows_loaded == ROWS
    dask_rows = fingerprint(pg_conn, pg_schema, "a", "id, amount, label")
    assert dask_rows == fingerprint(pg_conn, pg_schema, "b", "id, amount, label")
    assert dask_rows[:2] == (ROWS, ROWS)


def test_a_killed_worker_leaves_every_row_once(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn, cluster: Any
) -> None:
    """SIGKILL a worker mid-load: Dask reruns its tasks, the claims load each partition once."""
    rows = 400_000
    data = numbers(tmp_path / "big.parquet", rows=rows, group_rows=12_500)
    address = cluster.scheduler_address
    cfg = load_config(config(tmp_path, data, pg_schema, database_url, table="k", address=address))
    outcome: dict[str, Any] = {}

    def load() -> None:
        try:
            outcome["report"] = run_source(cfg, progress=False)
        except BaseException as exc:
            outcome["error"] = exc

    loader = threading.Thread(target=load)
    loader.start()
    staged = _wait_for_claims(pg_conn, pg_schema, loader)
    with distributed.Client(cluster.scheduler_address) as client:
        pids = client.run(os.getpid)
    os.kill(next(iter(pids.values())), signal.SIGKILL)
    loader.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    assert 1 <= staged < 8, "the worker was killed before any or after every partition staged"
    assert outcome["report"].rows_loaded == rows
    assert fingerprint(pg_conn, pg_schema, "k", "id")[:2] == (rows, rows)


def _wait_for_claims(conn: Conn, schema: str, loader: threading.Thread) -> int:
    """Wait until some partition is staged (its claim committed); how many are."""
    query = sql.SQL("select count(*) from {} where staged_at is not null").format(
        sql.Identifier(schema, "partitions")
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and loader.is_alive():
        try:
            row = conn.execute(query).fetchone()
        except psycopg.errors.UndefinedTable:
            row = None
        if row is not None and int(str(row[0])) >= 1:
            return int(str(row[0]))
        time.sleep(0.05)
    raise AssertionError("no partition was staged in time")


def test_bad_rows_over_the_limit_stop_the_run_on_dask(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn, cluster: Any
) -> None:
    """Target unchanged, bad rows in quarantine, staging dropped, and no URL in Dask's logs."""
    good = numbers(tmp_path / "good.parquet", rows=30_000)
    address = cluster.scheduler_address
    run_source(load_config(config(tmp_path, good, pg_schema, database_url, table="t")))
    before = fingerprint(pg_conn, pg_schema, "t", "id, amount, label")
    bad = tmp_path / "bad.parquet"
    frame = pl.read_parquet(good).with_columns(
        pl.when(pl.col("id") % 10_000 == 17).then(-1.0).otherwise(pl.col("amount")).alias("amount")
    )
    frame.write_parquet(bad, row_group_size=GROUP_ROWS)
    checks = "    validation_data:\n      checks: {amount: {ge: 0}}\n"
    cfg = config(
        tmp_path, bad, pg_schema, database_url, table="t", address=address, validation=checks
    )
    with pytest.raises(BadRowsOverLimit) as raised:
        run_source(load_config(cfg), progress=False)
    assert "max_bad_rows=0" in str(raised.value)
    assert fingerprint(pg_conn, pg_schema, "t", "id, amount, label") == before
    quarantined = pg_conn.execute(
        sql.SQL("select count(*) from {}").format(sql.Identifier(pg_schema, "t__rejected"))
    ).fetchone()
    assert quarantined is not None and int(str(quarantined[0])) >= 1
    assert leftovers(pg_conn, Target(pg_schema, "t", "replace")) == []
    with distributed.Client(address) as client:
        logs = [*client.get_scheduler_logs(), *sum(client.get_worker_logs().values(), ())]
    assert not [line for _, line in logs if database_url in line]


def test_a_glob_replaces_the_table_in_one_commit_on_dask(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn, cluster: Any
) -> None:
    """Three files of a glob replace the table together: the old rows go, all new ones come."""
    old = numbers(tmp_path / "old.parquet", rows=5_000)
    address = cluster.scheduler_address
    run_source(load_config(config(tmp_path, old, pg_schema, database_url, table="g")))
    folder = tmp_path / "parts"
    folder.mkdir()
    whole = pl.read_parquet(numbers(tmp_path / "whole.parquet", rows=45_000))
    for i in range(3):
        whole.slice(i * 15_000, 15_000).write_parquet(
            folder / f"p{i}.parquet", row_group_size=5_000
        )
    glob = config(
        tmp_path, folder / "p*.parquet", pg_schema, database_url, table="g", address=address
    )
    report = run_source(load_config(glob), progress=False)
    assert report.rows_loaded == 45_000
    assert fingerprint(pg_conn, pg_schema, "g", "id")[:2] == (45_000, 45_000)


def test_an_ingest_error_crosses_processes_whole() -> None:
    """A task's expected failure is returned, pickled, and keeps its class and fields."""
    error = BadRowsOverLimit(Path("/d/x.csv"), 3, "max_bad_rows=0", ["line 2"], "raw.x_rejected")
    back = pickle.loads(pickle.dumps(Refused(error))).error
    assert isinstance(back, BadRowsOverLimit)
    assert (back.bad_rows, back.examples, str(back)) == (3, ["line 2"], str(error))


@pytest.mark.parametrize(
    ("dask", "fragment"),
    [
        ("{address: 'host:8786'}", "dask.address"),
        ("{workers: 0}", "dask.workers"),
        ("{threads: 2}", "dask.threads"),
    ],
)
def test_a_wrong_dask_setting_names_its_key(tmp_path: Path, dask: str, fragment: str) -> None:
    """A bad `dask:` value or an unknown key is a config error naming the key."""
    path = tmp_path / "c.yml"
    path.write_text(f"executor: dask\ndask: {dask}\nsources:\n  s: {{input_path: x.csv}}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert fragment in str(raised.value)
