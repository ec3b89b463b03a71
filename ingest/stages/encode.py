"""Turn a polars DataFrame into PostgreSQL binary COPY tuples with numpy/pyarrow kernels.

This module maps dtypes to PostgreSQL types and each column to its wire parts; the row-major
assembly is `encode_layout`'s, numerics are `encode_numeric`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from ingest.stages.encode_layout import Fixed, Ints, empty, pack, segments, starts, width
from ingest.stages.encode_numeric import base10000, decimal, groups, numeric
from ingest.stages.types import JSON_FIELD, JSON_TEXT

HEADER: bytes = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags 0, header extension length 0
TRAILER: bytes = b"\xff\xff"

_PG_EPOCH_DAYS = 10_957  # 2000-01-01 minus 1970-01-01, in days
_PG_EPOCH_US = _PG_EPOCH_DAYS * 86_400_000_000
_JSON_PREFIX = '{"v":'
_SIMPLE_TYPES: dict[type[pl.DataType], str] = {
    pl.Boolean: "boolean",
    pl.Int8: "smallint",
    pl.Int16: "smallint",
    pl.UInt8: "smallint",
    pl.Int32: "integer",
    pl.UInt16: "integer",
    pl.Int64: "bigint",
    pl.UInt32: "bigint",
    pl.UInt64: "numeric(20,0)",
    pl.Float16: "real",
    pl.Float32: "real",
    pl.Float64: "double precision",
    pl.String: "text",
    pl.Categorical: "text",
    pl.Enum: "text",
    pl.Null: "text",
    pl.Binary: "bytea",
    pl.Date: "date",
    pl.Time: "time",
    pl.Duration: "interval",
    pl.Datetime: "timestamp",  # the bare class; an instance with a time zone is timestamptz
    pl.Decimal: "numeric",
    pl.List: "jsonb",
    pl.Array: "jsonb",
    pl.Struct: "jsonb",
    pl.Map: "jsonb",
}
_WIDEN: dict[type[pl.DataType], pl.DataType] = {
    pl.Float16: pl.Float32(),  # exact: every half-precision value is a real
    pl.Int8: pl.Int16(),
    pl.UInt8: pl.Int16(),
    pl.UInt16: pl.Int32(),
    pl.UInt32: pl.Int64(),
    pl.Categorical: pl.String(),
    pl.Enum: pl.String(),
    pl.Null: pl.String(),
}
# Prepared dtype -> big-endian wire dtype of its payload.
_WIRE: dict[type[pl.DataType], str] = {
    pl.Boolean: "u1",
    pl.Int16: ">i2",
    pl.Int32: ">i4",
    pl.Int64: ">i8",
    pl.Float32: ">f4",
    pl.Float64: ">f8",
}
# Temporal dtype -> numpy dtype of its Arrow data buffer: days, or ticks of its time unit.
_TEMPORAL: dict[type[pl.DataType], str] = {
    pl.Date: "<i4",
    pl.Time: "<i8",
    pl.Datetime: "<i8",
    pl.Duration: "<i8",
}


def pg_type(dtype: pl.DataType | type[pl.DataType]) -> str:
    """The PostgreSQL column type that `encode` writes for a polars dtype.

    Args:
        dtype: a polars dtype, as in `DataFrame.schema`.

    Returns:
        The type name to use in CREATE TABLE, e.g. ``"numeric(15,2)"`` or ``"timestamptz"``.

    Raises:
        TypeError: the dtype has no binary COPY encoding here (e.g. Object, Int128).
    """
    if isinstance(dtype, pl.Decimal):
        return f"numeric({dtype.precision or 38},{dtype.scale})"
    if isinstance(dtype, pl.Datetime):
        return "timestamp" if dtype.time_zone is None else "timestamptz"
    name = _SIMPLE_TYPES.get(dtype if isinstance(dtype, type) else type(dtype))
    if name is None:
        raise TypeError(f"no PostgreSQL binary COPY encoding for polars dtype {dtype}")
    return name


def prepare(df: pl.DataFrame) -> pl.DataFrame:
    """Cast each column to the physical form `encode` writes; idempotent, so both may call it.

    Int8/UInt8/UInt16/UInt32/Float16 widen, Categorical/Enum/Null become String, and
    List/Array/Struct/Map become String holding the jsonb wire payload (version byte 1 + polars'
    JSON, where NaN and infinities are null; a Map with text keys is an object, other keys a
    list of {"key", "value"} objects). Create the table from the *original* schema with `pg_type`.

    Args:
        df: a batch with dtypes `pg_type` accepts.

    Returns:
        The batch with only the columns that needed it replaced (the same frame if none did).

    Raises:
        TypeError: a column's dtype has no encoding; the message names column and dtype.
    """
    exprs: list[pl.Expr] = []
    for name, dtype in df.schema.items():
        try:
            pg_type(dtype)
        except TypeError as exc:
            raise TypeError(f"column {name!r}: {exc}") from None
        col = pl.col(name)
        if dtype == JSON_TEXT:  # already JSON text: sent as it is
            text = col.struct.field(JSON_FIELD)
            payload = pl.concat_str([pl.lit("\x01"), text])
            exprs.append(pl.when(text.is_not_null()).then(payload).alias(name))
        elif isinstance(dtype, (pl.List, pl.Array, pl.Struct, pl.Map)):
            if isinstance(dtype, pl.Map) and not isinstance(
                dtype.key, (pl.String, pl.Categorical, pl.Enum)
            ):  # a JSON object needs text keys: other keys keep their type in key/value pairs
                col = col.map.entries()
            text = pl.struct(col.alias("v")).struct.json_encode()
            text = text.str.strip_prefix(_JSON_PREFIX).str.strip_suffix("}")
            payload = pl.concat_str([pl.lit("\x01"), text])
            exprs.append(pl.when(col.is_not_null()).then(payload).alias(name))
        elif (target := _WIDEN.get(type(dtype))) is not None:
            exprs.append(col.cast(target))
    return df.with_columns(exprs) if exprs else df


# The join's separator, built from buffers: pa.scalar() would import pandas (~45 MB RSS) to
# check whether the value is a pandas NA.
_EMPTY_SEPARATOR = pa.Array.from_buffers(
    pa.large_binary(), 1, [None, pa.py_buffer(np.zeros(2, np.int64)), pa.py_buffer(b"")]
)[0]


@dataclass(frozen=True)
class Stamp:
    """Fields with the same value in every row, encoded once (see `stamp`)."""

    fields: int
    data: bytes


def stamp(values: pl.DataFrame) -> Stamp:
    """The one row of `values` as fields that can lead every row `encode` writes.

    The COPY's column list names these columns first, then the batch's.
    """
    if values.height != 1:
        raise ValueError(f"a stamp is one row, got {values.height}")
    return Stamp(values.width, bytes(encode(values))[2:])  # without its field count


def encode(df: pl.DataFrame, lead: Stamp | None = None) -> memoryview:
    """Encode every row of `df`, in order, as binary COPY tuples (no header, no trailer).

    Args:
        df: one batch; any dtype `pg_type` accepts. Nulls are written as length -1;
            nanosecond times are floored to PostgreSQL's microseconds.
        lead: constant fields written before each row's own, at no cost per row.

    Returns:
        The tuples as one bytes-like buffer, ready for psycopg's ``Copy.write``.
    """
    df = prepare(df).rechunk()
    if df.height == 0:
        return memoryview(b"")
    parts: list[Fixed | pa.Array] = [Fixed(">i2", df.width + (lead.fields if lead else 0))]
    if lead is not None and lead.data:
        parts.append(Fixed(f"V{len(lead.data)}", lead.data))
    for series in df.get_columns():
        parts.extend(_column_parts(series))
    arrays = segments(parts, df.height)
    if len(arrays) == 1:
        joined = arrays[0]
    else:
        # A null value writes only its length word, so its (null) piece is skipped; without
        # nulls the kernel's plain path is a quarter faster.
        nulls = "skip" if any(a.null_count for a in arrays) else "emit_null"
        joined = pc.binary_join_element_wise(*arrays, _EMPTY_SEPARATOR, null_handling=nulls)
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int64)
    start, stop = int(offsets[joined.offset]), int(offsets[joined.offset + len(joined)])
    return memoryview(joined.buffers()[2].slice(start, stop - start))


def _column_parts(s: pl.Series) -> list[Fixed | pa.Array]:
    """The length word and payload parts of one prepared column."""
    n = len(s)
    invalid = s.is_null().to_numpy() if s.null_count() else None
    if type(s.dtype) in (pl.String, pl.Binary):
        return _text_parts(s, invalid)
    payload = _payload(s, invalid is not None)
    size = width(payload)
    if invalid is None:
        return [Fixed(">i4", size), *payload]

    def null_lengths(out: Ints) -> None:
        out[...] = size
        np.copyto(out, -1, where=invalid)

    # A null writes only its length word, so the payload leaves the fixed block.
    bitmap = pa.py_buffer(np.packbits(~invalid, bitorder="little"))
    data = pa.Array.from_buffers(pa.large_binary(), n, [bitmap, starts(n, size), pack(payload, n)])
    return [Fixed(">i4", null_lengths), data]


def _text_parts(s: pl.Series, invalid: NDArray[np.bool_] | None) -> list[Fixed | pa.Array]:
    """Length words and bytes of a text column; equal-length values join the fixed block."""
    n = len(s)
    # Polars converts its string views to offsets while holding the GIL; Arrow's cast does not.
    arr = s.to_arrow(compat_level=pl.CompatLevel.newest()).cast(pa.large_binary())
    ends = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    lengths = np.subtract(ends[1:], ends[:-1], out=empty(n, np.int64))
    if invalid is not None:
        np.copyto(lengths, -1, where=invalid)
    elif (size := int(lengths.min())) == int(lengths.max()):
        # Codes, flags, hashes: a fixed width saves the join a piece per row.
        if size == 0:
            return [Fixed(">i4", 0)]
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[ends[0] : ends[-1]]
        return [Fixed(">i4", size), Fixed(f"V{size}", data.view(f"V{size}"))]
    return [Fixed(">i4", lengths), arr]


def _values(s: pl.Series, nulls: bool) -> Ints:
    """A non-text column's physical values as numpy (values under nulls: zero)."""
    if type(s.dtype) in _WIRE and not nulls:  # numbers are their own physical form
        return s.to_numpy()
    temporal = _TEMPORAL.get(type(s.dtype))
    if temporal is not None and not nulls:
        # The Arrow export's data buffer is the ticks: to_physical would cost a polars query
        # (~0.15 ms, a tenth of a date column's encoding).
        arr = s.to_arrow()
        return np.frombuffer(arr.buffers()[1], dtype=temporal)[arr.offset : arr.offset + len(s)]
    values = s if type(s.dtype) in _WIRE else s.to_physical()
    if nulls:
        values = values.fill_null(False if values.dtype == pl.Boolean else 0)
    return values.to_numpy()


def _payload(s: pl.Series, nulls: bool) -> list[Fixed]:
    """The fixed-width payload parts of a non-text prepared column (values under nulls: any)."""
    dtype = s.dtype
    if isinstance(dtype, pl.Decimal):
        return decimal(s.to_arrow(), dtype.precision or 38, dtype.scale)
    array = _values(s, nulls)
    if type(dtype) is pl.UInt64:
        return numeric(None, base10000(array, groups(int(array.max()))), None, 0)
    if isinstance(dtype, pl.Duration):  # interval: microseconds, days, months
        return [
            Fixed(">i8", _ticks(array, dtype.time_unit, 0)),
            Fixed(">i4", 0),
            Fixed(">i4", 0),
        ]
    if isinstance(dtype, pl.Datetime):
        return [Fixed(">i8", _ticks(array, dtype.time_unit, _PG_EPOCH_US))]
    if type(dtype) is pl.Time:
        return [Fixed(">i8", _ticks(array, "ns", 0))]
    if type(dtype) is pl.Date:
        return [Fixed(">i4", lambda out: np.subtract(array, _PG_EPOCH_DAYS, out=out))]
    wire = _WIRE.get(type(dtype))
    if wire is None:
        raise TypeError(f"encode has no binary layout for prepared dtype {dtype}")
    return [Fixed(wire, array)]


def _ticks(array: Ints, unit: str, epoch_us: int) -> Callable[[Ints], None]:
    """A writer of int64 ticks in a polars time unit as microseconds since `epoch_us`."""

    def write(out: Ints) -> None:
        if unit == "ns":  # floor, so instants before 1970 round towards the past
            np.floor_divide(array, 1000, out=out)
        elif unit == "ms":
            np.multiply(array, 1000, out=out)
        else:
            out[...] = array
        np.subtract(out, epoch_us, out=out)

    return write
