"""What a replace keeps and an append respects: foreign keys, the kind of relation, columns."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import psycopg
import pytest
from configs import write_config
from psycopg import sql

from ingest import load_config, run_source
from ingest.errors import ConstraintBroken, NotATable, RequiredColumnMissing

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
    **settings: str,
) -> None:
    """Write `frame` to Parquet and load it into `schema.table` the way a user's config would."""
    data = tmp_path / f"{table}-{uuid.uuid4().hex[:6]}.parquet"
    frame.write_parquet(data)
    cfg = write_config(
        tmp_path,
        data,
        schema,
        url,
        data.stem,
        workers,
        table=table,
        if_exists=if_exists,
        **settings,
    )
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


@pytest.fixture
def dummy_server(pg_conn: Conn) -> Iterator[str]:
    """A foreign server of a handler-less wrapper: enough to create (not read) a foreign table."""
    name = f"fdw_{uuid.uuid4().hex[:8]}"
    pg_conn.execute(sql.SQL("create foreign data wrapper {}").format(sql.Identifier(name)))
    pg_conn.execute(
        sql.SQL("create server {} foreign data wrapper {}").format(
            sql.Identifier(name), sql.Identifier(name)
        )
    )
    yield name
    pg_conn.execute(sql.SQL("drop foreign data wrapper {} cascade").format(sql.Identifier(name)))


NOT_TABLES = [
    ("create view {t} as select 1::bigint as id", "view", "replace"),
    ("create view {t} as select 1::bigint as id", "view", "append"),
    ("create view {t} as select 1::bigint as id", "view", "fail"),
    ("create materialized view {t} as select 1::bigint as id", "materialized view", "replace"),
    ("create materialized view {t} as select 1::bigint as id", "materialized view", "append"),
    ("create foreign table {t} (id bigint) server {s}", "foreign table", "append"),
    ("create table {t} (id bigint) partition by range (id)", "partitioned table", "replace"),
]


@pytest.mark.parametrize(("ddl", "kind", "if_exists"), NOT_TABLES)
def test_a_name_that_is_not_a_table_is_refused_before_loading(
    tmp_path: Path,
    database_url: str,
    pg_schema: str,
    pg_conn: Conn,
    dummy_server: str,
    ddl: str,
    kind: str,
    if_exists: str,
) -> None:
    """A view, materialized view, foreign table or (for replace) partitioned table is left alone."""
    pg_conn.execute(
        sql.SQL(ddl).format(t=sql.Identifier(pg_schema, "x"), s=sql.Identifier(dummy_server))
    )
    with pytest.raises(NotATable) as info:
        load(tmp_path, ids({"id": [5]}), pg_schema, database_url, table="x", if_exists=if_exists)
    message = str(info.value)
    assert message.startswith(f"{pg_schema}.x is a {kind}, not ")
    assert "fix:" in message and "\n" not in message
    left = pg_conn.execute(
        "select c.relkind::text, count(*) over () from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s"
        " and c.relname !~ '^(runs|files|schema_versions|run_samples|run_facts)$'"
        " and c.relkind in ('r', 'p', 'v', 'm', 'f')",
        (pg_schema,),
    ).fetchall()
    assert [str(k) for k, _ in left] == [
        {"view": "v", "materialized view": "m", "foreign table": "f", "partitioned table": "p"}[
            kind
        ]
    ]


def test_an_append_into_a_partitioned_table_still_loads(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """Appending into a partitioned table inserts through it, into its partitions."""
    parted = sql.Identifier(pg_schema, "x")
    pg_conn.execute(
        sql.SQL(
            "create table {} (id bigint, _loaded_at timestamptz, _run_id uuid)"
            " partition by range (id)"
        ).format(parted)
    )
    pg_conn.execute(
        sql.SQL("create table {} partition of {} for values from (0) to (100)").format(
            sql.Identifier(pg_schema, "x_low"), parted
        )
    )
    load(tmp_path, ids({"id": [5, 6]}), pg_schema, database_url, table="x", if_exists="append")
    assert checksum(pg_conn, pg_schema, "x_low")[0] == 2


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    ("names", "lineage"),
    [
        ({}, ("_loaded_at", "_run_id")),
        ({"loaded_at_column": "loaded", "run_id_column": "run"}, ("loaded", "run")),
    ],
)
def test_an_append_adds_the_lineage_columns_a_table_lacks(
    tmp_path: Path,
    database_url: str,
    pg_schema: str,
    pg_conn: Conn,
    workers: int,
    names: dict[str, str],
    lineage: tuple[str, str],
) -> None:
    """Appending to a table made elsewhere adds the lineage columns; its old rows keep NULL."""
    table = sql.Identifier(pg_schema, "legacy")
    pg_conn.execute(sql.SQL("create table {} (id bigint, name text)").format(table))
    pg_conn.execute(sql.SQL("insert into {} values (1, 'old'), (2, 'older')").format(table))
    frame = pl.DataFrame(
        {"id": [3, 4], "name": ["new", "newer"]}, schema={"id": pl.Int64, "name": pl.String}
    )
    load(
        tmp_path,
        frame,
        pg_schema,
        database_url,
        table="legacy",
        if_exists="append",
        workers=workers,
        **names,
    )
    rows = pg_conn.execute(
        sql.SQL("select id, {} is null, {} is null from {} order by id").format(
            sql.Identifier(lineage[0]), sql.Identifier(lineage[1]), table
        )
    ).fetchall()
    assert rows == [(1, True, True), (2, True, True), (3, False, False), (4, False, False)]
    types = pg_conn.execute(
        "select attname, format_type(atttypid, atttypmod), attnotnull from pg_attribute"
        " where attrelid = %s::regclass and attnum > 2 order by attnum",
        (f'"{pg_schema}".legacy',),
    ).fetchall()
    assert types == [(lineage[0], "timestamp with time zone", False), (lineage[1], "uuid", False)]


@pytest.mark.parametrize("workers", [1, 2])
def test_an_append_refuses_a_not_null_column_the_file_lacks(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn, workers: int
) -> None:
    """A table column NOT NULL without a default that the file lacks is named before loading."""
    load(tmp_path, ids({"id": [1, 2]}), pg_schema, database_url, table="t", workers=workers)
    table = sql.Identifier(pg_schema, "t")
    pg_conn.execute(sql.SQL("alter table {} add column x int not null default 0").format(table))
    pg_conn.execute(sql.SQL("alter table {} alter column x drop default").format(table))
    kept = checksum(pg_conn, pg_schema, "t")
    with pytest.raises(RequiredColumnMissing) as info:
        load(
            tmp_path,
            ids({"id": [3]}),
            pg_schema,
            database_url,
            table="t",
            if_exists="append",
            workers=workers,
        )
    assert info.value.column == "x"
    assert str(info.value).startswith(
        f'{pg_schema}.t has column "x" NOT NULL without a default, which the file does not have'
    )
    assert "fix: give it a default, drop NOT NULL, or add the column to the file" in str(info.value)
    assert checksum(pg_conn, pg_schema, "t") == kept


@pytest.mark.parametrize(
    "column", ["x int not null default 7", "x bigint generated always as identity", "x int"]
)
def test_an_append_fills_a_column_the_file_lacks_when_it_can(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn, column: str
) -> None:
    """A column with a default, an identity or no NOT NULL takes the rows the file brings."""
    load(tmp_path, ids({"id": [1]}), pg_schema, database_url, table="t")
    table = sql.Identifier(pg_schema, "t")
    pg_conn.execute(sql.SQL("alter table {} add column " + column).format(table))
    load(tmp_path, ids({"id": [2, 3]}), pg_schema, database_url, table="t", if_exists="append")
    assert checksum(pg_conn, pg_schema, "t")[0] == 3


@pytest.mark.parametrize("workers", [1, 2])
def test_replace_keeps_not_null_and_refuses_nulls(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn, workers: int
) -> None:
    """A column made NOT NULL stays so after a replace; new rows with a null are refused."""
    frame = pl.DataFrame(
        {"id": [1, 2], "name": ["a", "b"]}, schema={"id": pl.Int64, "name": pl.String}
    )
    load(tmp_path, frame, pg_schema, database_url, table="t", workers=workers)
    table = sql.Identifier(pg_schema, "t")
    pg_conn.execute(sql.SQL("alter table {} alter column name set not null").format(table))
    load(tmp_path, frame, pg_schema, database_url, table="t", workers=workers)
    flags = pg_conn.execute(
        "select attname, attnotnull from pg_attribute where attrelid = %s::regclass"
        " and attnum > 0 and not attisdropped order by attnum",
        (f'"{pg_schema}".t',),
    ).fetchall()
    assert flags == [("id", False), ("name", True), ("_loaded_at", True), ("_run_id", True)]
    kept = checksum(pg_conn, pg_schema, "t")
    nulls = pl.DataFrame({"id": [3], "name": [None]}, schema={"id": pl.Int64, "name": pl.String})
    with pytest.raises(ConstraintBroken) as info:
        load(tmp_path, nulls, pg_schema, database_url, table="t", workers=workers)
    assert 'NOT NULL on "name"' in str(info.value)
    assert 'column "name" of relation "t" contains null values' in str(info.value)
    assert checksum(pg_conn, pg_schema, "t") == kept
