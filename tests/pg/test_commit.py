"""The commit step and the local executor, on a real PostgreSQL, without the rest of a run."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import sql
from rich.console import Console

from ingest.config_load import load_config
from ingest.errors import BadRowsOverLimit, IngestError
from ingest.executors import local
from ingest.executors.task import Job
from ingest.pg import commit
from ingest.pg.staging import Staged
from ingest.pg.target import Target
from ingest.runtime.memory import RssWatch
from ingest.stages import cast, partition
from ingest.stages.plan import make_plan
from ingest.stages.profile import profile_file

Conn = psycopg.Connection[tuple[object, ...]]
LINEAGE = ("_loaded_at", "_run_id")


def _result(key: str, sent: int) -> commit.PartitionResult:
    return commit.PartitionResult(key, rows_read=sent, rows_sent=sent, rows_rejected=0)


def test_results_must_cover_every_partition_once_and_add_up() -> None:
    commit.check_results(["a", "b"], [_result("a", 2), _result("b", 3)], 5)
    for results, staged in (
        ([_result("a", 2)], 2),  # b missing
        ([_result("a", 2), _result("a", 2), _result("b", 3)], 7),  # a twice
        ([_result("a", 2), _result("b", 3)], 6),  # a row staged that no task reported
    ):
        with pytest.raises(IngestError, match=r"do not add up.*nothing was changed"):
            commit.check_results(["a", "b"], results, staged)


def _staged(conn: Conn, schema: str, rows: list[int]) -> Staged:
    run_id = uuid.uuid4().hex
    table = Target(schema, f"_stage_{run_id[:8]}", "replace")
    conn.execute(sql.SQL("create table {} (id bigint)").format(table.ident()))
    with (
        conn.cursor() as cur,
        cur.copy(sql.SQL("copy {} (id) from stdin").format(table.ident())) as copy,
    ):
        for row in rows:
            copy.write_row((row,))
    return Staged(table, None, False, len(rows), datetime.now(UTC), run_id)


def _spec(url: str, control: Conn, target: Target, **hooks: object) -> commit.Commit:
    return commit.Commit(
        url,
        control,
        target,
        ("id",),
        LINEAGE,
        hooks.get("before"),
        hooks.get("on_commit"),
        None,
        lambda _: None,  # type: ignore[arg-type]
    )


def _rows(conn: Conn, target: Target) -> list[tuple[object, ...]]:
    query = sql.SQL("select id, _run_id::text from {} order by id").format(target.ident())
    return conn.execute(query).fetchall()


def test_a_replace_commits_the_staged_rows_stamped_with_the_run(
    database_url: str, pg_conn: Conn, pg_schema: str
) -> None:
    target = Target(pg_schema, "t", "replace")
    pg_conn.execute(sql.SQL("create table {} (id bigint)").format(target.ident()))
    pg_conn.execute(sql.SQL("insert into {} values (99)").format(target.ident()))
    staged = _staged(pg_conn, pg_schema, [1, 2, 3])
    recorded: list[str] = []

    def on_commit(conn: Conn) -> None:  # runs in the commit's transaction, before COMMIT
        conn.execute(sql.SQL("create table {} ()").format(sql.Identifier(pg_schema, "ledger")))
        recorded.append("in")

    assert commit.commit(staged, _spec(database_url, pg_conn, target, on_commit=on_commit)) == 3
    run = str(uuid.UUID(staged.run_id))
    assert _rows(pg_conn, target) == [(1, run), (2, run), (3, run)]
    assert recorded == ["in"]
    gone = pg_conn.execute("select to_regclass(%s)", (staged.table.display,)).fetchone()
    assert gone == (None,)


def test_an_append_adds_to_the_rows_already_there(
    database_url: str, pg_conn: Conn, pg_schema: str
) -> None:
    target = Target(pg_schema, "t", "append")
    first = _staged(pg_conn, pg_schema, [1])
    commit.commit(first, _spec(database_url, pg_conn, target))
    second = _staged(pg_conn, pg_schema, [2, 3])
    assert commit.commit(second, _spec(database_url, pg_conn, target)) == 2
    assert [r[0] for r in _rows(pg_conn, target)] == [1, 2, 3]


def test_a_failure_inside_the_commit_leaves_the_target_as_it_was(
    database_url: str, pg_conn: Conn, pg_schema: str
) -> None:
    target = Target(pg_schema, "t", "replace")
    commit.commit(_staged(pg_conn, pg_schema, [7]), _spec(database_url, pg_conn, target))
    before = _rows(pg_conn, target)

    def broken(conn: Conn) -> None:
        raise RuntimeError("the ledger write failed")

    with pytest.raises(RuntimeError):
        commit.commit(
            _staged(pg_conn, pg_schema, [1, 2]),
            _spec(database_url, pg_conn, target, on_commit=broken),
        )
    assert _rows(pg_conn, target) == before


def _job(path: Path, pg_schema: str, table: str, validation: str = "") -> Job:
    cfg = path.with_suffix(".yml")
    cfg.write_text(f"""
path: {{input_path: '{path}'}}
database: {{table_name: '{table}', if_table_exists: replace, schema: {pg_schema}}}
{validation}
""")
    config = load_config(cfg)
    source = config.source(None)
    profile = profile_file(path, "parquet", 1_000, source.csv)
    plan = make_plan(profile, 1 << 30, base_bytes=0, forced="streaming", connections=2)
    casts = cast.plan_casts(
        cfg, profile.schema, source.schema_config, profile.sample, fmt="parquet"
    )
    output = casts.output_schema(profile.schema)
    target = Target(pg_schema, table, "replace")
    return Job(config, source, profile, plan, casts, output, target, uuid.uuid4().hex)


def _run(job: Job, url: str, control: Conn, parts: list[partition.Partition]) -> local.Counts:
    counts = local.Counts()
    with RssWatch() as watch:
        env = local.Session(
            url, control, watch, Console(quiet=True), lambda _: None, time.monotonic(), False, False
        )
        local.load(job, env, parts, counts, local.Hooks(on_commit=lambda conn: None))
    return counts


def _groups(path: Path, sizes: list[int], bad_every: int = 0) -> None:
    schema = pa.schema([("id", pa.int64()), ("v", pa.int64())])
    with pq.ParquetWriter(path, schema) as writer:
        first = 0
        for size in sizes:
            ids = list(range(first, first + size))
            values = [-1 if bad_every and i % bad_every == 0 else i for i in ids]
            writer.write_table(pa.table({"id": ids, "v": values}, schema=schema))
            first += size


def test_the_local_executor_loads_each_partition_once_and_commits_once(
    database_url: str, pg_conn: Conn, pg_schema: str, tmp_path: Path
) -> None:
    path = tmp_path / "g.parquet"
    _groups(path, [1_000] * 7)
    parts = partition.parquet_partitions(path, target_rows=2_000)
    assert len(parts) == 4
    job = _job(path, pg_schema, "t")
    counts = _run(job, database_url, pg_conn, parts)
    assert (counts.read, counts.loaded, counts.rejected) == (7_000, 7_000, 0)
    got = pl.read_database(
        sql.SQL("select id, v from {} order by id").format(job.target.ident()).as_string(pg_conn),
        pg_conn,
    )
    assert got["id"].to_list() == list(range(7_000)) == got["v"].to_list()


def test_the_bad_row_limit_is_counted_across_partitions(
    database_url: str, pg_conn: Conn, pg_schema: str, tmp_path: Path
) -> None:
    """Each partition stays under the limit; all of them together pass it: nothing commits."""
    path = tmp_path / "b.parquet"
    _groups(path, [1_000] * 4, bad_every=250)  # 4 bad rows per partition, 16 in all
    parts = partition.parquet_partitions(path, target_rows=1_000)
    job = _job(path, pg_schema, "t", "validation_data: {max_bad_rows: 10, checks: {v: {ge: 0}}}")
    with pytest.raises(BadRowsOverLimit, match="max_bad_rows=10"):
        _run(job, database_url, pg_conn, parts)
    exists = pg_conn.execute("select to_regclass(%s)", (job.target.display,)).fetchone()
    assert exists == (None,)
