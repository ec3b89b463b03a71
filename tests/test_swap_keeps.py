"""What a replace keeps and an append respects: foreign keys, the kind of relation, columns."""

from __future__ import annotations

import uuid
from pathlib import Path

import polars as pl
import psycopg
import pytest
from psycopg import sql

from ingest import load_config, run_source
from ingest.errors import ConstraintBroken

Conn = psycopg.Connection[tuple[object, ...]]


def load(
    tmp_path: Path,
    frame: pl.DataFrame,
    schema: str,
    url: str,
    *,
    table: str,
    if_exists: str = "replace",
    workers: int = 0,
    extra: str = "",
) -> None:
    """Write `frame` to Parquet and load it into `schema.table` the way a user's config would."""
    data = tmp_path / f"{table}-{uuid.uuid4().hex[:6]}.parquet"
    frame.write_parquet(data)
    cfg = tmp_path / f"{data.stem}.yml"
    connections = f"\n  workers: {workers}" if workers else ""
    cfg.write_text(f"""
path: {{input_path: '{data}'}}
database:
  table_name: '{table}'
  if_table_exists: {if_exists}
  schema: {schema}
  metadata_schema: {schema}
  url: '{url}'{connections}{extra}
""")
    run_source(load_config(cfg), progress=False)


def checksum(conn: Conn, schema: str, table: str) -> tuple[object, ...]:
    """Row count and an order-independent digest of every row."""
    row = conn.execute(
        sql.SQL(
            "select count(*), md5(coalesce(string_agg(t::text, '|' order by t::text), ''))"
            " from {} t"
        ).format(sql.Identifier(schema, table))
    ).fetchone()
    assert row is not None
    return row


def foreign_keys(conn: Conn, schema: str, table: str) -> list[tuple[object, ...]]:
    """The foreign keys defined on `schema.table`: name, referenced table, definition."""
    return conn.execute(
        "select conname, confrelid::regclass::text, pg_get_constraintdef(oid)"
        " from pg_constraint where contype = 'f' and conrelid = %s::regclass order by conname",
        (f'"{schema}"."{table}"',),
    ).fetchall()


def ids(frame: dict[str, list[int]]) -> pl.DataFrame:
    return pl.DataFrame(frame, schema={k: pl.Int64 for k in frame})


@pytest.mark.parametrize("workers", [1, 2])
def test_replace_keeps_the_tables_own_foreign_key(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn, workers: int
) -> None:
    """A replace recreates the table's foreign key to its parent and refuses rows that break it."""
    parent = sql.Identifier(pg_schema, "parent")
    pg_conn.execute(sql.SQL("create table {} (id bigint primary key)").format(parent))
    pg_conn.execute(sql.SQL("insert into {} values (1), (2), (3)").format(parent))
    load(
        tmp_path,
        ids({"id": [10, 11], "parent_id": [1, 2]}),
        pg_schema,
        database_url,
        table="child",
        workers=workers,
    )
    pg_conn.execute(
        sql.SQL(
            "alter table {} add constraint child_parent_fk foreign key (parent_id)"
            " references {} (id) on delete cascade"
        ).format(sql.Identifier(pg_schema, "child"), parent)
    )
    before = foreign_keys(pg_conn, pg_schema, "child")

    load(
        tmp_path,
        ids({"id": [20, 21, 22], "parent_id": [3, 3, 1]}),
        pg_schema,
        database_url,
        table="child",
        workers=workers,
    )
    assert foreign_keys(pg_conn, pg_schema, "child") == before
    assert before[0][0] == "child_parent_fk"

    kept = checksum(pg_conn, pg_schema, "child")
    with pytest.raises(ConstraintBroken) as info:
        load(
            tmp_path,
            ids({"id": [30], "parent_id": [99]}),
            pg_schema,
            database_url,
            table="child",
            workers=workers,
        )
    message = str(info.value)
    assert "child_parent_fk" in message and f"{pg_schema}.child" in message
    assert "(parent_id)=(99)" in message and "fix:" in message
    assert checksum(pg_conn, pg_schema, "child") == kept
    assert foreign_keys(pg_conn, pg_schema, "child") == before


@pytest.mark.parametrize("workers", [1, 2])
def test_replace_keeps_the_foreign_keys_that_reference_it(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn, workers: int
) -> None:
    """Other tables' foreign keys to a replaced table come back, on its recreated primary key."""
    people = sql.Identifier(pg_schema, "people")
    orders = sql.Identifier(pg_schema, "orders")
    load(tmp_path, ids({"id": [1, 2, 3]}), pg_schema, database_url, table="people", workers=workers)
    pg_conn.execute(
        sql.SQL("alter table {} add constraint people_pk primary key (id)").format(people)
    )
    pg_conn.execute(
        sql.SQL(
            "create table {} (n int, person_id bigint constraint orders_person_fk"
            " references {} (id))"
        ).format(orders, people)
    )
    pg_conn.execute(sql.SQL("insert into {} values (1, 2), (2, null)").format(orders))
    before = foreign_keys(pg_conn, pg_schema, "orders")

    load(tmp_path, ids({"id": [2, 4, 5]}), pg_schema, database_url, table="people", workers=workers)
    assert foreign_keys(pg_conn, pg_schema, "orders") == before
    assert before[0][:2] == ("orders_person_fk", f"{pg_schema}.people")
    primary = pg_conn.execute(
        "select conname from pg_constraint where conrelid = %s::regclass and contype = 'p'",
        (f'"{pg_schema}".people',),
    ).fetchall()
    assert primary == [("people_pk",)]

    kept = checksum(pg_conn, pg_schema, "people")
    with pytest.raises(ConstraintBroken) as info:
        load(
            tmp_path, ids({"id": [4, 5]}), pg_schema, database_url, table="people", workers=workers
        )
    message = str(info.value)
    assert "orders_person_fk" in message
    assert f"{pg_schema}.orders" in message and f"{pg_schema}.people" in message
    assert "fix:" in message
    assert checksum(pg_conn, pg_schema, "people") == kept
    assert foreign_keys(pg_conn, pg_schema, "orders") == before


def test_replace_keeps_a_self_reference_once(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """A table's foreign key to itself is recreated once, checked against the new rows."""
    load(tmp_path, ids({"id": [1, 2], "boss": [1, 1]}), pg_schema, database_url, table="staff")
    staff = sql.Identifier(pg_schema, "staff")
    pg_conn.execute(sql.SQL("alter table {} add primary key (id)").format(staff))
    pg_conn.execute(
        sql.SQL(
            "alter table {} add constraint staff_boss_fk foreign key (boss) references {} (id)"
        ).format(staff, staff)
    )
    before = foreign_keys(pg_conn, pg_schema, "staff")
    load(tmp_path, ids({"id": [7, 8], "boss": [7, 7]}), pg_schema, database_url, table="staff")
    assert foreign_keys(pg_conn, pg_schema, "staff") == before
    with pytest.raises(ConstraintBroken, match="staff_boss_fk"):
        load(tmp_path, ids({"id": [9], "boss": [7]}), pg_schema, database_url, table="staff")
    assert checksum(pg_conn, pg_schema, "staff")[0] == 2
