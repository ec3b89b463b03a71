"""Decide and apply the casts a source asks for: declared types, detected dates, rounding."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ingest.config import SchemaConfig
from ingest.errors import ConfigError
from ingest.stages.types import type_and_format

# Formats tried, in order, on string columns when `date_format: true`.
_DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%Y/%m/%d", "%d-%m-%Y", "%d.%m.%Y")
_DATETIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M:%S",
)

_ZONED_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z")


@dataclass(frozen=True)
class CastPlan:
    """Target types by column, and how to parse the string columns that become dates."""

    types: dict[str, pl.DataType]
    date_formats: dict[str, str]
    round_floats: int | None
    read_as: dict[str, pl.DataType] = field(default_factory=dict)

    def output_schema(self, schema: dict[str, pl.DataType]) -> dict[str, pl.DataType]:
        """The schema after casting a frame with `schema`."""
        return {name: self.types.get(name, dtype) for name, dtype in schema.items()}

    def read_schema(self, schema: dict[str, pl.DataType]) -> dict[str, pl.DataType]:
        """The types to read a file profiled as `schema` with: a declared type replaces the
        guessed one where the reader must parse the text itself (see `read_types`)."""
        return {name: self.read_as.get(name, dtype) for name, dtype in schema.items()}


def _detect_date_format(values: pl.Series) -> tuple[pl.DataType, str] | None:
    """The first date or datetime format every non-null sampled value parses with."""
    present = values.drop_nulls()
    if present.len() == 0:
        return None
    for fmt in _DATE_FORMATS:
        if present.str.to_date(fmt, strict=False).null_count() == 0:
            return pl.Date(), fmt
    for fmt in _DATETIME_FORMATS:
        if present.str.to_datetime(fmt, time_unit="us", strict=False).null_count() == 0:
            return pl.Datetime("us"), fmt
    for fmt in _ZONED_FORMATS:  # "...Z" or "...+02:00": instants, kept as timestamptz (UTC)
        parsed = present.str.to_datetime(fmt, time_unit="us", time_zone="UTC", strict=False)
        if parsed.null_count() == 0:
            return pl.Datetime("us", "UTC"), fmt
    return None


def plan_casts(
    config_path: Path,
    schema: dict[str, pl.DataType],
    config: SchemaConfig,
    sample: pl.DataFrame,
    *,
    fmt: str,
) -> CastPlan:
    """Resolve the config's casts against the file's columns.

    Raises:
        ConfigError: `data_type` names a column the file does not have.
    """
    unknown = [c for c in config.data_type if c not in schema]
    if unknown:
        raise ConfigError(
            config_path,
            [
                f"schema_config.data_type: no column {c!r} in the file (it has {list(schema)})"
                for c in unknown
            ],
        )
    types: dict[str, pl.DataType] = {}
    formats: dict[str, str] = {}
    for column, name in config.data_type.items():
        types[column], given = type_and_format(name)
        if given is not None:
            formats[column] = given
    if config.date_format:
        for name, dtype in schema.items():
            if name in types or dtype != pl.String or name not in sample.columns:
                continue
            found = _detect_date_format(sample[name])
            if found:
                types[name], formats[name] = found
    return CastPlan(
        types=types,
        date_formats=formats,
        round_floats=config.decimal_precision,
        read_as=read_types(fmt, types),
    )


# Types polars' CSV reader parses from the text exactly and strictly: a value that does not fit
# fails the chunk, which is then re-read as text so the value becomes a bad row.
_EXACT_CSV = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.Float32, pl.Float64, pl.Decimal, pl.String)


def read_types(fmt: str, types: dict[str, pl.DataType]) -> dict[str, pl.DataType]:
    """How to read a CSV's declared columns: as the declared type where the reader parses it
    exactly, else as text that the cast stage parses.

    Reading a declared column with the type guessed from the sample and casting it afterwards
    changes values: `00501` guessed as an integer prints back as `501`, `1.5` guessed as a float
    truncates to `1` in an integer column, and a decimal goes through a float. Parquet columns
    already carry their types, so they are read as they are.
    """
    if fmt != "csv":
        return {}
    return {
        name: dtype if isinstance(dtype, _EXACT_CSV) else pl.String()
        for name, dtype in types.items()
    }
