"""Rejects land in `<table>__rejected`, committed on their own, with lines users can find."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import psycopg
import pytest
from psycopg import sql

from ingest.stages.rejects import REJECTS_SCHEMA
from ingest.state.quarantine import format_examples, quarantine_table, write_rejects

Conn = psycopg.Connection[tuple[object, ...]]


def rejects(*rows: tuple[int, str, str, str, dict[str, Any]]) -> pl.DataFrame:
    """A rejects frame from (row, column, rule, reason, raw row) tuples."""
    return pl.DataFrame(
        [(row, col, rule, reason, json.dumps(raw)) for row, col, rule, reason, raw in rows],
        schema=REJECTS_SCHEMA,
        orient="row",
    )


SAMPLE = rejects(
    (150, "Age", "cast", "'forty' is not int64", {"Age": "forty", "name": "Al"}),
    (3, "name", "str_length", "'' length not in 1..", {"Age": "4", "name": ""}),
    (150, "name", "isin", "'Al' is not one of ['Bo']", {"Age": "forty", "name": "Al"}),
)


def stored(conn: Conn, schema: str, table: str) -> list[tuple[object, ...]]:
    name = quarantine_table(schema, table)
    return conn.execute(
        sql.SQL(
            "select run_id, source_file, row_kind, row_number, column_name, rule, reason, "
            "raw_values, rejected_at is not null from {}.{} order by row_number, column_name"
        ).format(*map(sql.Identifier, name))
    ).fetchall()


def test_quarantine_name_is_the_table_plus_a_suffix() -> None:
    """A short name just gains `__rejected`."""
    assert quarantine_table("raw", "people") == ("raw", "people__rejected")


def test_long_names_are_cut_to_63_bytes_and_stay_distinct() -> None:
    """Long and multi-byte names fit in 63 bytes, without a split character, and do not clash."""
    first = quarantine_table("raw", "é" * 40)[1]
    second = quarantine_table("raw", "é" * 39 + "x")[1]
    assert len(first.encode()) <= 63
    assert first.endswith("__rejected") and first.startswith("éé")
    first.encode().decode("utf-8")
    assert first != second


def test_examples_name_the_csv_line_and_the_column() -> None:
    """CSV examples give the 1-based line (after the header), in row order, up to the limit."""
    assert format_examples(SAMPLE, "csv", limit=2) == [
        "line 5, column 'name': str_length: '' length not in 1..",
        "line 152, column 'Age': cast: 'forty' is not int64",
    ]


def test_examples_give_the_parquet_row_index() -> None:
    """Parquet examples give the 0-based row; a headerless CSV's line is the row plus one."""
    assert format_examples(SAMPLE, "parquet", limit=1) == [
        "row 3, column 'name': str_length: '' length not in 1.."
    ]
    assert format_examples(SAMPLE, "csv", limit=1, line_offset=1)[0].startswith("line 4,")


def test_write_rejects_stores_every_reject(pg_conn: Conn, pg_schema: str) -> None:
    """Each reject is one row: run, file, CSV line, column, rule, reason and the raw row."""
    written = write_rejects(pg_conn, pg_schema, "people", "run1", "/d/p.csv", "csv", SAMPLE)
    assert written == 3
    rows = stored(pg_conn, pg_schema, "people")
    assert rows[0] == (
        "run1",
        "/d/p.csv",
        "csv_line",
        5,
        "name",
        "str_length",
        "'' length not in 1..",
        '{"Age": "4", "name": ""}',
        True,
    )
    assert [(r[3], r[4], r[5]) for r in rows] == [
        (5, "name", "str_length"),
        (152, "Age", "cast"),
        (152, "name", "isin"),
    ]
    assert json.loads(str(rows[1][7])) == {"Age": "forty", "name": "Al"}


def test_write_rejects_appends_parquet_rows(pg_conn: Conn, pg_schema: str) -> None:
    """A second run appends to the existing table; Parquet rows keep their 0-based index."""
    write_rejects(pg_conn, pg_schema, "t", "run1", "a.csv", "csv", SAMPLE)
    write_rejects(pg_conn, pg_schema, "t", "run2", "b.parquet", "parquet", SAMPLE.head(1))
    rows = stored(pg_conn, pg_schema, "t")
    assert len(rows) == 4
    assert [r[2:4] for r in rows if r[0] == "run2"] == [("parquet_row", 150)]


def test_write_rejects_uses_the_chunk_line_offset(pg_conn: Conn, pg_schema: str) -> None:
    """A chunk's line offset (first_line - first_row) replaces the header's plus two."""
    write_rejects(pg_conn, pg_schema, "t", "r", "a.csv", "csv", SAMPLE, line_offset=9)
    assert [r[3] for r in stored(pg_conn, pg_schema, "t")] == [12, 159, 159]


def test_write_rejects_writes_nothing_for_no_rejects(pg_conn: Conn, pg_schema: str) -> None:
    """No rejects: nothing written, no table created."""
    assert write_rejects(pg_conn, pg_schema, "t", "r", "f", "csv", SAMPLE.clear()) == 0
    found = pg_conn.execute(
        "select count(*) from pg_tables where schemaname = %s", (pg_schema,)
    ).fetchone()
    assert found == (0,)


def test_write_rejects_quotes_a_hostile_table_name(pg_conn: Conn, pg_schema: str) -> None:
    """A table name with quotes, semicolons and SQL stays one identifier; values survive CSV."""
    hostile = 'x"; drop table pg_class; --' + "ü" * 30
    tricky = rejects((0, 'a"b', "cast", "'1,\n2\\' is not int64\x00", {'a"b': "1,\n2\\"}))
    assert write_rejects(pg_conn, pg_schema, hostile, "r", "f.csv", "csv", tricky) == 1
    schema, name = quarantine_table(pg_schema, hostile)
    assert len(name.encode()) <= 63
    tables = pg_conn.execute(
        "select tablename from pg_tables where schemaname = %s", (schema,)
    ).fetchall()
    assert tables == [(name,)]
    row = stored(pg_conn, pg_schema, hostile)[0]
    assert row[4:7] == ('a"b', "cast", "'1,\n2\\' is not int64\\u0000")
    assert json.loads(str(row[7])) == {'a"b': "1,\n2\\"}


def test_rejects_persist_when_the_load_rolls_back(
    database_url: str, pg_conn: Conn, pg_schema: str
) -> None:
    """Rows written during a load that then rolls back are still there afterwards."""
    with psycopg.connect(database_url) as load:
        load.execute(sql.SQL("create table {}.target (a int)").format(sql.Identifier(pg_schema)))
        write_rejects(pg_conn, pg_schema, "target", "r", "f.csv", "csv", SAMPLE)
        load.rollback()
    assert len(stored(pg_conn, pg_schema, "target")) == 3
    target = pg_conn.execute(
        "select count(*) from pg_tables where schemaname = %s and tablename = 'target'",
        (pg_schema,),
    ).fetchone()
    assert target == (0,)


def test_write_rejects_refuses_a_connection_in_a_transaction(
    database_url: str, pg_schema: str
) -> None:
    """A non-autocommit connection would tie the rejects to the caller's fate: refused."""
    with psycopg.connect(database_url) as conn, pytest.raises(ValueError, match="autocommit"):
        write_rejects(conn, pg_schema, "t", "r", "f", "csv", SAMPLE)
