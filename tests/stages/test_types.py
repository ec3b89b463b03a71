"""Type names in data_type: polars' and PostgreSQL's, each the type the column gets."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import psycopg
import pytest
from psycopg import sql

from ingest import load_config, run_source
from ingest.stages.types import parse_type_name

# name in data_type, the polars type it casts to, the PostgreSQL column type the load creates
PG_NAMES = [
    ("bigint", pl.Int64(), "bigint"),
    ("integer", pl.Int32(), "integer"),
    ("smallint", pl.Int16(), "smallint"),
    ("numeric(10,2)", pl.Decimal(10, 2), "numeric(10,2)"),
    ("varchar", pl.String(), "text"),
    ("varchar(5)", pl.String(), "text"),
    ("text", pl.String(), "text"),
    ("timestamptz", pl.Datetime("us", "UTC"), "timestamp with time zone"),
    ("timestamp", pl.Datetime("us"), "timestamp without time zone"),
    ("double precision", pl.Float64(), "double precision"),
    ("real", pl.Float32(), "real"),
    ("boolean", pl.Boolean(), "boolean"),
    ("date", pl.Date(), "date"),
]
VALUES = {
    "bigint": "9007199254740993",
    "integer": "-2147483648",
    "smallint": "32767",
    "numeric(10,2)": "12345678.91",
    "varchar": "plain",
    "varchar(5)": "short",
    "text": "long text",
    "timestamptz": "2024-03-01T10:00:00+02:00",
    "timestamp": "2024-03-01 10:00:00",
    "double precision": "0.1",
    "real": "1.5",
    "boolean": "true",
    "date": "2024-02-29",
}


@pytest.mark.parametrize(("name", "dtype", "_column"), PG_NAMES)
def test_postgresql_type_names_mean_the_matching_type(
    name: str, dtype: pl.DataType, _column: str
) -> None:
    """Each PostgreSQL name is the polars type of the same width and kind."""
    assert parse_type_name(name) == dtype
    assert parse_type_name(name.upper()) == dtype


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("uuid", "not supported for loading: load it as text and cast"),
        ("jsonb", "not supported for loading: load it as text and cast"),
        ("numeric", "give its precision and scale"),
        ("numeric(40,2)", "needs 1 <= precision <= 38"),
        ("varchar(0)", "unknown type 'varchar(0)'"),
    ],
)
def test_unsupported_postgresql_names_say_what_to_do(name: str, said: str) -> None:
    """A PostgreSQL name a load cannot write says why and what to use instead."""
    with pytest.raises(ValueError) as info:
        parse_type_name(name)
    assert said in str(info.value)


@pytest.mark.integration
def test_a_load_creates_each_postgresql_type(
    database_url: str,
    pg_schema: str,
    pg_conn: psycopg.Connection[tuple[object, ...]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Columns declared with PostgreSQL names get exactly those column types, values intact."""
    columns = {f"c{i}": name for i, (name, _, _) in enumerate(PG_NAMES)}
    data = tmp_path / "typed.csv"
    data.write_text(",".join(columns) + "\n" + ",".join(VALUES[n] for n in columns.values()) + "\n")
    declared = ", ".join(f"{c}: '{n}'" for c, n in columns.items())
    config = tmp_path / "typed.yml"
    config.write_text(
        f"database: {{schema: {pg_schema}, metadata_schema: {pg_schema}}}\n"
        f"sources:\n  typed:\n    input_path: '{data}'\n"
        f"    schema_config: {{data_type: {{{declared}}}}}\n"
    )
    monkeypatch.setenv("DATABASE_URL", database_url)
    run_source(load_config(config))
    got = dict(
        pg_conn.execute(
            "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a "
            "where a.attrelid = to_regclass(%s) and a.attnum > 0 and a.attname like 'c%%'",
            (f'"{pg_schema}"."typed"',),
        ).fetchall()
    )
    assert got == {c: column for c, (_, _, column) in zip(columns, PG_NAMES, strict=True)}
    table = sql.Identifier(pg_schema, "typed")
    row = pg_conn.execute(
        sql.SQL(
            "select c0::text, c1::text, c3::text, (c7 at time zone 'UTC')::text from {}"
        ).format(table)
    ).fetchone()
    assert row == ("9007199254740993", "-2147483648", "12345678.91", "2024-03-01 08:00:00")
