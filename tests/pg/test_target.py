"""The target table: what an append may COPY into directly."""

from __future__ import annotations

import polars as pl
import psycopg
from psycopg import sql

from ingest.pg.target import Target, column_types
from ingest.stages import encode
from ingest.stages.types import type_mismatches

Conn = psycopg.Connection[tuple[object, ...]]
# One dtype of each kind the encoder writes, as the loader creates its columns.
KINDS: dict[str, pl.DataType] = {
    "b": pl.Boolean(),
    "i2": pl.Int16(),
    "i4": pl.Int32(),
    "i8": pl.Int64(),
    "u8": pl.UInt64(),
    "f4": pl.Float32(),
    "f8": pl.Float64(),
    "s": pl.String(),
    "bin": pl.Binary(),
    "d": pl.Date(),
    "t": pl.Time(),
    "iv": pl.Duration("us"),
    "ts": pl.Datetime("us"),
    "tz": pl.Datetime("us", "UTC"),
    "dec": pl.Decimal(15, 2),
    "j": pl.List(pl.Int64()),
}


def test_a_table_made_of_pg_types_matches_them_exactly(pg_conn: Conn, pg_schema: str) -> None:
    """Every type `pg_type` names reads back the same from the catalogue, so appends go direct."""
    wanted = {name: encode.pg_type(kind) for name, kind in KINDS.items()}
    target = Target(pg_schema, "kinds", "append")
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in wanted.items()
    )
    pg_conn.execute(sql.SQL("create table {} ({})").format(target.ident(), columns))

    types = column_types(pg_conn, target)

    assert type_mismatches(types, wanted) == []
    assert type_mismatches(types, {**wanted, "i4": "bigint", "missing": "text"}) == [
        "'i4' is integer in the table, bigint in this load",
        "'missing' is missing in the table, text in this load",
    ]
    assert column_types(pg_conn, Target(pg_schema, "absent", "append")) == {}
