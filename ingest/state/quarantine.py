"""Keep rejected rows in `<table>__rejected` beside the target, committed on their own."""

from __future__ import annotations

import hashlib
from typing import Any

import polars as pl
import psycopg
from psycopg import sql

from ingest.stages.csvread import ROW

SUFFIX = "__rejected"
_MAX_IDENTIFIER = 63  # bytes: PostgreSQL's NAMEDATALEN - 1
_COPY_ROWS = 50_000
COLUMNS = (
    "run_id",
    "source_file",
    "row_kind",
    "row_number",
    "column_name",
    "rule",
    "reason",
    "raw_values",
)


def quarantine_table(schema: str, table: str) -> tuple[str, str]:
    """The schema and name of a table's quarantine: `<table>__rejected`, at most 63 bytes.

    A name too long to take the suffix keeps its first bytes plus a hash of the whole name, so
    two long names that share a prefix do not share a quarantine table.
    """
    name = table + SUFFIX
    if len(name.encode()) <= _MAX_IDENTIFIER:
        return schema, name
    tag = "_" + hashlib.sha1(table.encode()).hexdigest()[:8]
    room = _MAX_IDENTIFIER - len(SUFFIX) - len(tag)
    base = table.encode()[:room].decode("utf-8", errors="ignore")  # never split a character
    return schema, base + tag + SUFFIX


def row_kind(fmt: str) -> str:
    """What `row_number` counts: `csv_line` (1-based line) or `parquet_row` (0-based index)."""
    return "csv_line" if fmt == "csv" else "parquet_row"


def _row_number(fmt: str, line_offset: int) -> pl.Expr:
    """`__row` as the user finds the row: the CSV line (1-based) or the Parquet row index.

    The line is `__row + line_offset`. A quoted CSV field with embedded newlines makes the real
    line later by one per newline before it; passing a chunk's `first_line - first_row` as the
    offset corrects for those in earlier chunks.
    """
    return pl.col(ROW) + line_offset if fmt == "csv" else pl.col(ROW)


def write_rejects(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    run_id: str,
    source_file: str,
    fmt: str,
    rejects: pl.DataFrame,
    *,
    line_offset: int = 2,
    alone: bool = True,
) -> int:
    """Append rejects to the target's quarantine table, creating it if missing, and commit.

    Args:
        conn: an autocommit connection used for nothing else meanwhile; the rows commit in their
            own transaction, so they stay when the load itself fails and rolls back.
        schema: the target's schema.
        table: the target table (not the quarantine's name).
        run_id: the run, so a run's rejects can be selected.
        source_file: the file the rows came from.
        fmt: `csv` or `parquet`: how `__row` becomes `row_number`.
        rejects: frame as made by `validate.split_batch` (`__row`, column, rule, reason, raw).
        line_offset: CSV line of `__row` 0: 2 after a header, 1 without one, or a chunk's
            `first_line - first_row` (exact across multi-line fields in earlier chunks).
        alone: the rows commit on their own (`conn` must be autocommit); when False they go
            in the caller's open transaction and commit with it (a partition task's, so that a
            rerun of the task does not write them twice).

    Returns:
        Rows written.

    Raises:
        ValueError: `conn` is not in autocommit mode.
    """
    if alone and not conn.autocommit:
        raise ValueError("write_rejects needs an autocommit connection so rejects commit alone")
    if rejects.height == 0:
        return 0
    schema, name = quarantine_table(schema, table)
    target = sql.SQL(".").join([sql.Identifier(schema), sql.Identifier(name)])
    rows = rejects.select(
        pl.lit(run_id).alias("run_id"),
        pl.lit(source_file).alias("source_file"),
        pl.lit(row_kind(fmt)).alias("row_kind"),
        _row_number(fmt, line_offset).cast(pl.Int64).alias("row_number"),
        pl.col("column").alias("column_name"),
        "rule",
        # PostgreSQL text cannot hold NUL; raw is JSON, where NUL is already escaped.
        pl.col("reason").str.replace_all("\x00", "\\u0000", literal=True),
        pl.col("raw").alias("raw_values"),
    )
    copy = sql.SQL("copy {} ({}) from stdin (format csv)").format(
        target, sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    )
    with conn.transaction():
        ensure_table(conn, schema, name)
        with conn.cursor() as cur, cur.copy(copy) as out:
            for chunk in rows.iter_slices(_COPY_ROWS):
                out.write(chunk.write_csv(include_header=False))
    return rows.height


def ensure_table(conn: psycopg.Connection[Any], schema: str, name: str) -> sql.Composed:
    """Create a quarantine table if missing, in the caller's transaction; returns its name.

    Columns (`COLUMNS`, then `rejected_at`): what the rows' writers insert.
    """
    target = sql.SQL(".").join([sql.Identifier(schema), sql.Identifier(name)])
    # Serialise creation: two runs creating the same table at once would otherwise collide.
    conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"{schema}.{name}",))
    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
    conn.execute(
        sql.SQL(
            "create table if not exists {} ("
            "run_id text not null, source_file text not null, row_kind text not null, "
            "row_number bigint not null, column_name text not null, rule text not null, "
            "reason text not null, raw_values text, "
            "rejected_at timestamptz not null default now())"
        ).format(target)
    )
    return target


def format_examples(
    rejects: pl.DataFrame, fmt: str, limit: int = 5, *, line_offset: int = 2
) -> list[str]:
    """The first rejects as lines a user can act on.

    For example "line 152, column 'Age': cast: 'forty' is not int64"; Parquet rows read
    "row 151" (0-based). `line_offset` as for `write_rejects`.
    """
    where = "line" if fmt == "csv" else "row"
    shown = (
        rejects.sort(ROW, maintain_order=True)
        .head(limit)
        .select(_row_number(fmt, line_offset).alias("n"), "column", "rule", "reason")
    )
    return [  # a reject of a whole row (a ragged one) has no column to name
        f"{where} {n}{f', column {column!r}' if column else ''}: {rule}: {_clip(reason)}"
        for n, column, rule, reason in shown.rows()
    ]


def _clip(text: str, width: int = 200) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
