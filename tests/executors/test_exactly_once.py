"""A partition task stages its rows once, however often and however concurrently it runs."""

from __future__ import annotations

import multiprocessing
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import sql

from ingest.config_load import load_config
from ingest.errors import BadRowsOverLimit
from ingest.executors.exactly_once import stage_partition
from ingest.executors.task import Job
from ingest.pg import staging as pg_staging
from ingest.pg.staging import staging_table
from ingest.pg.target import Target
from ingest.stages import cast, keys, partition
from ingest.stages.plan import make_plan
from ingest.stages.profile import profile_file
from ingest.state import claims, quarantine

Conn = psycopg.Connection[tuple[object, ...]]


def _file(path: Path, rows: int, bad_every: int = 0) -> Path:
    ids = list(range(rows))
    values = [-1 if bad_every and i % bad_every == 0 else i for i in ids]
    pq.write_table(pa.table({"id": ids, "v": values}), path, row_group_size=500)
    return path


def _job(path: Path, schema: str, validation: str = "") -> Job:
    cfg = path.with_suffix(".yml")
    cfg.write_text(f"""
path: {{input_path: '{path}'}}
database: {{table_name: t, if_table_exists: replace, schema: {schema}, metadata_schema: {schema}}}
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
    target = Target(schema, "t", "replace")
    return Job(config, source, profile, plan, casts, output, target, uuid.uuid4().hex)


def _staging(conn: Conn, job: Job) -> Target:
    claims.ensure_claims(conn, job.meta)
    table = staging_table(job.target, job.run_id)
    conn.execute(pg_staging.create_sql(table, keys.staged_columns(job.output, job.merge)))
    return table


def _staged_ids(conn: Conn, table: Target) -> list[int]:
    rows = conn.execute(sql.SQL("select id from {} order by id").format(table.ident()))
    return [int(str(r[0])) for r in rows.fetchall()]


def test_a_task_run_twice_stages_its_rows_once(
    database_url: str, pg_conn: Conn, pg_schema: str, tmp_path: Path
) -> None:
    job = _job(_file(tmp_path / "a.parquet", 2_000), pg_schema)
    parts = partition.parquet_partitions(job.profile.path, target_rows=1_000)
    table = _staging(pg_conn, job)
    first = stage_partition(database_url, job, parts[0], table)
    again = stage_partition(database_url, job, parts[0], table)
    assert first.rows_sent == again.rows_sent == 1_000
    assert again.key == first.key and again.seconds == first.seconds  # the recorded result
    stage_partition(database_url, job, parts[1], table)
    assert _staged_ids(pg_conn, table) == list(range(2_000))
    done = claims.recorded(pg_conn, job.meta, job.run_id)
    assert {k: r.rows_sent for k, r in done.items()} == {p.key: 1_000 for p in parts}


def test_concurrent_copies_of_a_task_in_other_processes_stage_its_rows_once(
    database_url: str, pg_conn: Conn, pg_schema: str, tmp_path: Path
) -> None:
    job = _job(_file(tmp_path / "c.parquet", 3_000), pg_schema)
    [part] = partition.parquet_partitions(job.profile.path, target_rows=10_000)
    table = _staging(pg_conn, job)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(3, mp_context=spawn) as pool:
        futures = [pool.submit(stage_partition, database_url, job, part, table) for _ in range(3)]
        results = [f.result(timeout=120) for f in futures]
    assert {r.rows_sent for r in results} == {3_000}
    assert len({r.seconds for r in results}) == 1  # one ran; the others returned its result
    assert _staged_ids(pg_conn, table) == list(range(3_000))


def _quarantined(conn: Conn, job: Job) -> int:
    schema, name = quarantine.quarantine_table(job.target.schema, job.target.table)
    count = conn.execute(
        sql.SQL("select count(*) from {}").format(sql.Identifier(schema, name))
    ).fetchone()
    assert count is not None
    return int(str(count[0]))


def test_bad_rows_commit_with_their_partition_and_not_twice(
    database_url: str, pg_conn: Conn, pg_schema: str, tmp_path: Path
) -> None:
    job = _job(
        _file(tmp_path / "b.parquet", 1_000, bad_every=100),
        pg_schema,
        "validation_data: {max_bad_rows: 50, checks: {v: {ge: 0}}}",
    )
    [part] = partition.parquet_partitions(job.profile.path)
    table = _staging(pg_conn, job)
    for _ in range(2):
        result = stage_partition(database_url, job, part, table)
        assert (result.rows_sent, result.rows_rejected) == (990, 10)
    assert _quarantined(pg_conn, job) == 10
    assert len(_staged_ids(pg_conn, table)) == 990


def test_a_partition_over_the_limit_keeps_its_bad_rows_and_stages_nothing(
    database_url: str, pg_conn: Conn, pg_schema: str, tmp_path: Path
) -> None:
    job = _job(
        _file(tmp_path / "o.parquet", 1_000, bad_every=10),
        pg_schema,
        "validation_data: {max_bad_rows: 5, checks: {v: {ge: 0}}}",
    )
    [part] = partition.parquet_partitions(job.profile.path)
    table = _staging(pg_conn, job)
    with pytest.raises(BadRowsOverLimit, match="max_bad_rows=5"):
        stage_partition(database_url, job, part, table)
    assert _quarantined(pg_conn, job) > 5
    assert _staged_ids(pg_conn, table) == []
    assert claims.recorded(pg_conn, job.meta, job.run_id) == {}
