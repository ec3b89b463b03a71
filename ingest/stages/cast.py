"""Decide and apply the casts a source asks for: declared types, detected dates, rounding."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ingest.config import SchemaConfig
from ingest.errors import ConfigError
from ingest.stages.csvread import ROW
from ingest.stages.rejects import NO_RAW, quoted, with_raw
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
    if fmt not in ("csv", "jsonl"):  # text formats; the others carry their own types
        return {}
    return {
        name: dtype if isinstance(dtype, _EXACT_CSV) else pl.String()
        for name, dtype in types.items()
    }


def _type_label(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Decimal):
        return f"decimal({dtype.precision},{dtype.scale})"
    if isinstance(dtype, pl.Datetime):
        return f"datetime[{dtype.time_zone}]" if dtype.time_zone else "datetime"
    return str(dtype).lower()


def _parse(col: pl.Expr, source: pl.DataType, target: pl.DataType, fmt: str | None) -> pl.Expr:
    """`col` converted to `target`, null where a value does not convert."""
    if source == pl.String():
        # polars 2 does not cast text to temporal or boolean types; parse it instead.
        if isinstance(target, pl.Datetime):
            zone = target.time_zone
            parsed = col.str.to_datetime(fmt, time_unit="us", time_zone=zone, strict=False)
            if zone is None and fmt is None:
                # polars gives null for text with an offset ("...Z") when no zone is asked for:
                # read such text as UTC instants, kept as naive UTC like the rest.
                utc = col.str.to_datetime(None, time_unit="us", time_zone="UTC", strict=False)
                parsed = pl.coalesce(parsed, utc.dt.replace_time_zone(None))
            return parsed
        if target == pl.Date():
            return col.str.to_date(fmt, strict=False)
        if target == pl.Time():
            return col.str.to_time(fmt, strict=False)
        if target == pl.Boolean():  # as polars' CSV reader: true/false in any case
            words = {"true": True, "false": False}
            return col.str.to_lowercase().replace_strict(words, default=None, return_dtype=target)
    if source.is_float() and target.is_integer():
        # A cast would truncate 1.5 to 1: only whole numbers convert, the rest are bad values.
        return pl.when(col == col.floor()).then(col.cast(target, strict=False))
    return col.cast(target, strict=False)


def _lenient_casts(
    plan: CastPlan, schema: dict[str, pl.DataType], actual: dict[str, pl.DataType]
) -> tuple[list[pl.Expr], dict[str, str]]:
    """One expression per column that gives its planned type (null where a value does not
    convert), and a label for each column that can fail.

    A column goes from its `actual` type to the plan's type, else to its `schema` type: so a
    batch re-read as text is parsed back to the types the file was profiled with.
    """
    exprs, labels = [], {}
    for name, dtype in schema.items():
        col, target, fmt = pl.col(name), plan.types.get(name, dtype), plan.date_formats.get(name)
        if target != actual[name] or fmt is not None:
            col = _parse(col, actual[name], target, fmt)
            labels[name] = f"{_type_label(target)} ({fmt})" if fmt else _type_label(target)
        if plan.round_floats is not None and target in (pl.Float32(), pl.Float64()):
            col = col.round(plan.round_floats)
        exprs.append(col.alias(name))
    return exprs, labels


def _unchanged(
    plan: CastPlan, schema: dict[str, pl.DataType], actual: dict[str, pl.DataType]
) -> bool:
    """Whether `_lenient_casts` would leave every column as it is."""
    floats = (pl.Float32(), pl.Float64())
    return all(
        plan.types.get(name, dtype) == actual[name]
        and plan.date_formats.get(name) is None
        and (plan.round_floats is None or actual[name] not in floats)
        for name, dtype in schema.items()
    )


def cast_failures(
    batch: pl.DataFrame, plan: CastPlan, schema: dict[str, pl.DataType]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The cast frame (with `__row`) and its failed cells, without `raw`."""
    if ROW not in batch.columns:
        raise ValueError(f"the batch has no {ROW!r} column; add it with with_row_index({ROW!r})")
    actual = dict(batch.schema)
    if _unchanged(plan, schema, actual) and actual[ROW] == pl.Int64():
        # The usual batch: nothing to cast. Frames built from their columns skip the query
        # engine's ~0.1 ms a call, which thousands of small batches would pay.
        return pl.DataFrame([batch[ROW], *(batch[name] for name in schema)]), NO_RAW
    exprs, labels = _lenient_casts(plan, schema, actual)
    cast = batch.select(pl.col(ROW).cast(pl.Int64), *exprs)
    if not labels:
        return cast, NO_RAW
    both = pl.concat(
        [
            batch.select(list(labels)),
            cast.select(ROW, *[pl.col(c).alias(f"{c}\0out") for c in labels]),
        ],
        how="horizontal",
    )
    parts = [
        both.lazy()
        .filter(pl.col(c).is_not_null() & pl.col(f"{c}\0out").is_null())
        .select(
            ROW,
            column=pl.lit(c),
            rule=pl.lit("cast"),
            reason=quoted(pl.col(c), f"is not {label}"),
        )
        for c, label in labels.items()
    ]
    return cast, pl.concat(pl.collect_all(parts))


def cast_with_rejects(
    batch: pl.DataFrame, plan: CastPlan, schema: dict[str, pl.DataType]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cast a batch leniently: a value that fails becomes null and a reject record.

    Args:
        batch: the rows as read, with `__row`.
        plan: the casts to apply.
        schema: the profiled read schema (column to type, without `__row`); a column the plan
            does not cast but whose batch type differs (a chunk re-read as text) is parsed to it.

    Returns:
        The cast frame with every row (and `__row`), and one reject per failed cell (in row
        order), where the input was not null and the output is; a null input stays null and is
        not a reject.
    """
    cast, rejects = cast_failures(batch, plan, schema)
    return cast, with_raw(rejects.sort(ROW, maintain_order=True), batch, list(schema))
