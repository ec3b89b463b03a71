"""The type names a config may use, and the polars type each one means."""

from __future__ import annotations

import re

import polars as pl
import pyarrow as pa

_SIMPLE: dict[str, pl.DataType] = {
    # polars' names (int8 is polars' 1-byte integer, not PostgreSQL's int8 = bigint)
    "int8": pl.Int8(),
    "int16": pl.Int16(),
    "int32": pl.Int32(),
    "int64": pl.Int64(),
    "int": pl.Int64(),
    "float32": pl.Float32(),
    "float64": pl.Float64(),
    "float": pl.Float64(),
    "double": pl.Float64(),
    "bool": pl.Boolean(),
    "datetime": pl.Datetime("us"),
    "datetimetz": pl.Datetime("us", "UTC"),
    "time": pl.Time(),
    "string": pl.String(),
    "str": pl.String(),
    # PostgreSQL's names, each the type the column gets
    "smallint": pl.Int16(),
    "integer": pl.Int32(),
    "bigint": pl.Int64(),
    "real": pl.Float32(),
    "double precision": pl.Float64(),
    "boolean": pl.Boolean(),
    "date": pl.Date(),
    "timestamp": pl.Datetime("us"),
    "timestamp without time zone": pl.Datetime("us"),
    "timestamptz": pl.Datetime("us", "UTC"),
    "timestamp with time zone": pl.Datetime("us", "UTC"),
    "time without time zone": pl.Time(),
    "text": pl.String(),
    "varchar": pl.String(),
    "character varying": pl.String(),
}
_DECIMAL = re.compile(r"(?:decimal|numeric)\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)")
_VARCHAR = re.compile(r"(?:varchar|character varying)\(\s*[1-9]\d*\s*\)")
_DATETIME_TZ = re.compile(r"datetime\[\s*([A-Za-z_/+\-0-9:]+)\s*\]")
# PostgreSQL types a load cannot write yet: said plainly rather than listed as unknown.
_NOT_YET = {
    "uuid": "load it as text and cast in the staging model (`::uuid`)",
    "jsonb": "load it as text and cast in the staging model (`::jsonb`)",
    "json": "load it as text and cast in the staging model (`::jsonb`)",
    "numeric": "give its precision and scale, e.g. numeric(12,2)",
    "decimal": "give its precision and scale, e.g. decimal(12,2)",
}
_SPACES = re.compile(r"\s+")


def parse_type_name(name: str) -> pl.DataType:
    """The polars type for a config type name: polars' (`int64`, `decimal(12,2)`, `datetime[UTC]`)
    or PostgreSQL's (`bigint`, `numeric(12,2)`, `varchar(40)`, `timestamptz`, `double precision`).

    Raises:
        ValueError: the name is unknown; the message lists the names that are.
    """
    key = _SPACES.sub(" ", name.strip().lower())
    if key in _SIMPLE:
        return _SIMPLE[key]
    if _VARCHAR.fullmatch(key):  # the column is text: a str_length check enforces the limit
        return pl.String()
    if key in _NOT_YET:
        raise ValueError(f"type {name!r} is not supported for loading: {_NOT_YET[key]}")
    if match := _DECIMAL.fullmatch(key):
        precision, scale = int(match.group(1)), int(match.group(2) or 0)
        if not 1 <= precision <= 38 or scale > precision:
            raise ValueError(f"{name!r}: needs 1 <= precision <= 38 and scale <= precision")
        return pl.Decimal(precision, scale)
    if match := _DATETIME_TZ.fullmatch(name.strip()):
        zone = match.group(1)
        try:  # polars checks a zone only when a value meets it: make one meet it now
            pl.Series([0]).cast(pl.Datetime("us")).dt.replace_time_zone(zone)
        except pl.exceptions.PolarsError:
            raise ValueError(
                f"{name!r}: unknown time zone {zone!r}; use a tz database name such as UTC or "
                "Europe/Paris, or an offset such as +02:00"
            ) from None
        return pl.Datetime("us", zone)
    known = ", ".join(sorted(_SIMPLE)) + ", decimal(p,s), numeric(p,s), varchar(n), datetime[TZ]"
    raise ValueError(f"unknown type {name!r}; use one of: {known}")


def type_and_format(name: str) -> tuple[pl.DataType, str | None]:
    """A config type name, with the strftime format after a colon for a date, datetime or time:
    `date:%d/%m/%Y`, `datetime:%d.%m.%Y %H:%M`, `datetime[Europe/Paris]:%Y%m%d%H%M%S`.

    Raises:
        ValueError: the type is unknown, or a format follows a type that is not a date, a
            datetime or a time, or the format has no `%` directive.
    """
    text = name.strip()
    cut = text.find(":", text.find("]") + 1)  # a zone such as [+02:00] holds a colon itself
    if cut < 0:
        return parse_type_name(text), None
    dtype, fmt = parse_type_name(text[:cut]), text[cut + 1 :]
    if not dtype.is_temporal():
        raise ValueError(f"{name!r}: a format (after ':') is for date, datetime and time only")
    if "%" not in fmt:
        raise ValueError(f"{name!r}: the format needs strftime directives such as %d/%m/%Y")
    return dtype, fmt


# A JSON value kept as its own text and loaded as jsonb: a nested object or array of a JSON
# lines file. polars would re-shape it as a struct (every row gains every key any row has) or
# a list (mixed items become text), which changes the value.
JSON_FIELD = "\0json"
JSON_TEXT = pl.Struct({JSON_FIELD: pl.String()})

POLARS_MAX_PRECISION = 38  # polars' Decimal is 128-bit


def polars_readable(piece: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
    """`piece` with each decimal256 column of precision <= 38 as decimal128, unchanged in value.

    polars panics on a 256-bit decimal (`operator does not support primitive Int256`) although
    its own Decimal holds 38 digits; one that needs more is refused when the file is profiled.
    """
    wide = [i for i, f in enumerate(piece.schema) if pa.types.is_decimal256(f.type)]
    if not wide:
        return piece
    columns = list(piece.columns)
    for i in wide:
        kind = piece.schema.field(i).type
        columns[i] = columns[i].cast(pa.decimal128(kind.precision, kind.scale))
    if isinstance(piece, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(columns, names=piece.schema.names)
    return pa.Table.from_arrays(columns, names=piece.schema.names)


def empty_frame(schema: pa.Schema) -> pl.DataFrame:
    """A frame of no rows with `schema`'s columns as polars reads them.

    Built from no batches: `Schema.empty_table` converts Python lists, and pyarrow's list
    conversion imports pandas to ask whether they are pandas objects: ~45 MB of RSS in a load.
    """
    frame = pl.from_arrow(polars_readable(pa.Table.from_batches([], schema=schema)))
    assert isinstance(frame, pl.DataFrame)
    return frame


# pg_type's names as pg_catalog.format_type spells them; the others are spelled alike.
_FORMATTED = {
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
    "time": "time without time zone",
}


def type_mismatches(table: dict[str, str], wanted: dict[str, str]) -> list[str]:
    """The `wanted` columns (name: pg_type name) that `table` lacks or has with another type.

    Binary COPY sends each value in its type's own format, so it can fill a column only of the
    very type it encoded; anything else needs the staging table and an INSERT's casts.
    """
    found = []
    for name, kind in wanted.items():
        have, want = table.get(name), _FORMATTED.get(kind, kind)
        if have != want:
            found.append(f"{name!r} is {have or 'missing'} in the table, {want} in this load")
    return found
