"""The record of a rejected value: its row, column, rule, reason and the whole source row."""

from __future__ import annotations

import polars as pl

from ingest.stages.csvread import ROW
from ingest.stages.server_limits import printable

REJECTS_SCHEMA: dict[str, pl.DataType] = {
    ROW: pl.Int64(),
    "column": pl.String(),
    "rule": pl.String(),
    "reason": pl.String(),
    "raw": pl.String(),
}

EMPTY = pl.DataFrame(schema=REJECTS_SCHEMA)


def empty_rejects() -> pl.DataFrame:
    return EMPTY  # frames are immutable: one empty frame serves every batch


NO_RAW = EMPTY.drop("raw")


def quoted(value: pl.Expr, after: str) -> pl.Expr:
    """`'value' after`, as text, for a reject's reason.

    Not `pl.format`: in polars 2.1 it panics (`binview ... i < self.len()`) on a column whose
    first chunk is empty, which a filter of a multi-chunk batch (a CSV batch joined from two
    reads) yields whenever none of the first read's rows is bad. `concat_str` takes any chunks.
    """
    return pl.concat_str(pl.lit("'"), value.cast(pl.String), pl.lit(f"' {after}"))


def with_raw(rejects: pl.DataFrame, batch: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Attach the whole source row, JSON-encoded, to each reject."""
    if rejects.height == 0:
        return empty_rejects()
    rows = batch.with_columns(pl.col(ROW).cast(pl.Int64)).filter(
        pl.col(ROW).is_in(rejects[ROW].unique().implode())
    )
    raw = printable(rows).select(ROW, raw=pl.struct(columns).struct.json_encode())
    out = rejects.join(raw, on=ROW, how="left", maintain_order="left")
    return out.select(pl.col(name).cast(dtype) for name, dtype in REJECTS_SCHEMA.items())
