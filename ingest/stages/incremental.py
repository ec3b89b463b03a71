"""Incremental cursors: keep only the rows above the table's high-water mark (pure, no SQL)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ingest.config import SourceConfig
from ingest.errors import ConfigError
from ingest.stages import encode

if TYPE_CHECKING:
    from ingest.stages.remote import Location


@dataclass(frozen=True)
class Cursor:
    """A source's cursor column, its PostgreSQL type, and the mark read before the load."""

    column: str
    pg_type: str
    high_water: Any = None  # None: no committed run yet, every row is kept


@dataclass(frozen=True)
class Kept:
    """A batch's rows above the mark, with the count skipped and the batch's largest cursor."""

    good: pl.DataFrame
    rows: pl.Series
    skipped: int
    top: Any


def plan_cursor(
    config_path: Path, source: SourceConfig, output: dict[str, pl.DataType], file: Location
) -> Cursor | None:
    """The source's cursor, or None without `incremental`.

    Raises:
        ConfigError: the file has no such column, or one whose values do not order (a list).
    """
    if source.incremental is None:
        return None
    name = source.incremental.cursor
    if name not in output:
        raise ConfigError(
            config_path,
            [f"incremental.cursor: no column {name!r} in {file.name} (it has {', '.join(output)})"],
        )
    dtype = output[name]
    if dtype.is_nested() or dtype == pl.Boolean():
        raise ConfigError(
            config_path,
            [
                f"incremental.cursor: column {name!r} is {dtype}; a cursor must be a number, date,"
                " time or text that grows"
            ],
        )
    return Cursor(name, encode.pg_type(dtype))


def keep(cursor: Cursor | None, good: pl.DataFrame, rows: pl.Series) -> Kept:
    """The rows whose cursor is above the mark; a NULL cursor is kept (it cannot be compared)."""
    if cursor is None:
        return Kept(good, rows, 0, None)
    if cursor.high_water is not None:
        mark = pl.lit(cursor.high_water).cast(good.schema[cursor.column])
        above = (pl.col(cursor.column) > mark).fill_null(True)
        mask = good.select(above).to_series()
        skipped = good.height - int(mask.sum())
        if skipped:
            good, rows = good.filter(mask), rows.filter(mask)
    else:
        skipped = 0
    return Kept(good, rows, skipped, good[cursor.column].max() if good.height else None)


def higher(a: Any, b: Any) -> Any:
    """The larger of two cursor values, either of which may be None."""
    if a is None:
        return b
    if b is None:
        return a
    return b if b > a else a
