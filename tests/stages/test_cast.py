"""Casting follows the config: declared types, detected dates and rounding."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from ingest.config import SchemaConfig
from ingest.errors import ConfigError
from ingest.stages.cast import cast_with_rejects, plan_casts
from ingest.stages.csvread import ROW


def apply(frame: pl.DataFrame, config: SchemaConfig) -> pl.DataFrame:
    """Cast as a load does (`cast_with_rejects`), refusing any reject."""
    plan = plan_casts(Path("c.yml"), dict(frame.schema), config, frame, fmt="parquet")
    numbered = frame.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW))
    cast, rejects = cast_with_rejects(numbered, plan, dict(frame.schema))
    assert rejects.height == 0, rejects
    return cast.drop(ROW)


def test_declared_types_are_applied() -> None:
    """int64, float64, decimal and datetime casts produce those polars types and values."""
    frame = pl.DataFrame(
        {"age": [1, 2], "pay": ["1.5", "2.25"], "at": ["2024-01-02 03:04:05", None]},
        schema={"age": pl.Int32, "pay": pl.String, "at": pl.String},
    )
    out = apply(
        frame, SchemaConfig(data_type={"age": "int64", "pay": "decimal(10,2)", "at": "datetime"})
    )
    assert out.schema == {"age": pl.Int64, "pay": pl.Decimal(10, 2), "at": pl.Datetime("us")}
    assert out["at"][0] == dt.datetime(2024, 1, 2, 3, 4, 5)
    assert str(out["pay"][1]) == "2.25"


def test_dates_are_detected_only_when_every_value_parses() -> None:
    """date_format detects ISO and day-first dates; a mixed column stays text."""
    frame = pl.DataFrame(
        {
            "d": ["2024-01-31", "2023-12-01"],
            "eu": ["31/01/2024", "01/12/2023"],
            "mixed": ["2024-01-31", "soon"],
        }
    )
    out = apply(frame, SchemaConfig(date_format=True))
    assert out["d"].to_list() == [dt.date(2024, 1, 31), dt.date(2023, 12, 1)]
    assert out["eu"].to_list() == [dt.date(2024, 1, 31), dt.date(2023, 12, 1)]
    assert out.schema["mixed"] == pl.String


def test_decimal_precision_rounds_floats() -> None:
    """decimal_precision rounds float columns and leaves integers alone."""
    frame = pl.DataFrame({"x": [1.23456, 2.5], "n": [1, 2]})
    out = apply(frame, SchemaConfig(decimal_precision=2))
    assert out["x"].to_list() == [1.23, 2.5]
    assert out["n"].to_list() == [1, 2]


def test_cast_of_a_missing_column_names_it() -> None:
    """data_type for a column the file lacks is a config error naming the column."""
    frame = pl.DataFrame({"a": [1]})
    with pytest.raises(ConfigError, match="no column 'b'"):
        plan_casts(
            Path("c.yml"),
            dict(frame.schema),
            SchemaConfig(data_type={"b": "int64"}),
            frame,
            fmt="parquet",
        )


def test_a_failed_cast_is_a_reject_naming_row_column_and_value() -> None:
    """A value that does not fit becomes null and a reject naming its row, column and value."""
    frame = pl.DataFrame({"age": ["1", "abc", None]})
    config = SchemaConfig(data_type={"age": "int64"})
    plan = plan_casts(Path("c.yml"), dict(frame.schema), config, frame, fmt="parquet")
    numbered = frame.with_columns(pl.Series(ROW, [10, 11, 12]))
    cast, rejects = cast_with_rejects(numbered, plan, dict(frame.schema))
    assert cast["age"].to_list() == [1, None, None]
    assert rejects.select(ROW, "column").rows() == [(11, "age")]
    assert "abc" in rejects["raw"][0]


def test_offsets_in_text_become_instants() -> None:
    """ISO text with Z or an offset is detected as timestamptz and parsed to the same instant."""
    frame = pl.DataFrame({"t": ["2013-01-01T06:00:00Z", "2013-01-01T08:30:00+02:00"]})
    out = apply(frame, SchemaConfig(date_format=True))
    assert out.schema["t"] == pl.Datetime("us", "UTC")
    assert out["t"].dt.replace_time_zone(None).to_list() == [
        dt.datetime(2013, 1, 1, 6),
        dt.datetime(2013, 1, 1, 6, 30),
    ]
