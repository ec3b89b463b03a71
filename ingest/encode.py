"""Turn a polars DataFrame into PostgreSQL binary COPY tuples with numpy/pyarrow kernels."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

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
    pl.List: "jsonb",
    pl.Array: "jsonb",
    pl.Struct: "jsonb",
}
_WIDEN: dict[type[pl.DataType], pl.DataType] = {
    pl.Int8: pl.Int16(),
    pl.UInt8: pl.Int16(),
    pl.UInt16: pl.Int32(),
    pl.UInt32: pl.Int64(),
    pl.Categorical: pl.String(),
    pl.Enum: pl.String(),
    pl.Null: pl.String(),
}
# Native numpy dtype of a prepared column -> big-endian wire dtype (the payload of a fixed field).
_WIRE: dict[type[pl.DataType], str] = {
    pl.Boolean: "u1",
    pl.Int16: ">i2",
    pl.Int32: ">i4",
    pl.Int64: ">i8",
    pl.Float32: ">f4",
    pl.Float64: ">f8",
    pl.Date: ">i4",
    pl.Datetime: ">i8",
    pl.Time: ">i8",
}
_US_PER_UNIT = {"ns": -1000, "us": 1, "ms": 1000}  # negative: divide (floor) by that much


def pg_type(dtype: pl.DataType) -> str:
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
    for cls, name in _SIMPLE_TYPES.items():
        if dtype == cls or isinstance(dtype, cls):
            return name
    raise TypeError(f"no PostgreSQL binary COPY encoding for polars dtype {dtype}")


def prepare(df: pl.DataFrame) -> pl.DataFrame:
    """Cast each column to the physical form `encode` writes; idempotent, so both may call it.

    Small and unsigned integers widen, Categorical/Enum/Null become String, and List/Array/Struct
    become String holding the jsonb wire payload (version byte 1 + JSON text). Create the table
    from the *original* schema with `pg_type`, not from the prepared one.
    """
    exprs: list[pl.Expr] = []
    for name, dtype in df.schema.items():
        pg_type(dtype)  # reject unsupported dtypes early, naming them
        col = pl.col(name)
        if isinstance(dtype, (pl.List, pl.Array, pl.Struct)):
            text = pl.struct(col.alias("v")).struct.json_encode()
            text = text.str.strip_prefix(_JSON_PREFIX).str.strip_suffix("}")
            payload = pl.concat_str([pl.lit("\x01"), text])
            exprs.append(pl.when(col.is_not_null()).then(payload).alias(name))
        elif (target := _WIDEN.get(type(dtype))) is not None:
            exprs.append(col.cast(target))
        else:
            exprs.append(col)
    return df.select(exprs)


@dataclass(frozen=True)
class _Fixed:
    """A fixed-width part of every row: a constant or one big-endian value per row."""

    dtype: np.dtype[np.generic]
    value: int | NDArray[np.generic]


@dataclass(frozen=True)
class _Var:
    """A variable-width part of every row: a large_binary array whose null slots write nothing."""

    data: pa.Array


def encode(df: pl.DataFrame) -> memoryview:
    """Encode every row of `df`, in order, as binary COPY tuples (no header, no trailer).

    Args:
        df: one batch; any dtype `pg_type` accepts. Nulls are written as length -1.

    Returns:
        The tuples as one bytes-like buffer, ready for psycopg's ``Copy.write``.
    """
    df = prepare(df).rechunk()
    if df.height == 0:
        return memoryview(b"")
    parts: list[_Fixed | _Var] = [_Fixed(np.dtype(">i2"), df.width)]
    for series in df.get_columns():
        parts.extend(_column_parts(series))
    arrays = _segments(parts, df.height)
    if len(arrays) == 1:
        joined = arrays[0]
    else:
        empty = pa.scalar(b"", pa.large_binary())
        joined = pc.binary_join_element_wise(*arrays, empty, null_handling="skip")
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int64)
    start, stop = offsets[joined.offset], offsets[joined.offset + len(joined)]
    data = joined.buffers()[2]
    return memoryview(data.slice(int(start), int(stop - start)))


def _column_parts(s: pl.Series) -> list[_Fixed | _Var]:
    """The length word and payload parts of one prepared column."""
    valid = s.is_not_null().to_numpy() if s.null_count() else None
    dtype = s.dtype
    if dtype in (pl.String, pl.Binary):
        arr = s.to_arrow()
        arr = arr.view(pa.large_binary()) if arr.type == pa.large_string() else arr
        arr = arr if arr.type == pa.large_binary() else arr.cast(pa.large_binary())
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[
            arr.offset : arr.offset + len(s) + 1
        ]
        lengths = np.diff(offsets)
        return [_length(valid, lengths), _Var(arr)]
    if isinstance(dtype, pl.Decimal):
        payload = _decimal(s)
    elif dtype == pl.UInt64:
        digits = _base10000(_values(s).astype(np.uint64), 5)
        payload = _numeric(np.zeros(len(s), dtype=bool), digits, 5, 0)
    elif isinstance(dtype, pl.Duration):
        interval = np.zeros(len(s), dtype=[("us", ">i8"), ("days", ">i4"), ("months", ">i4")])
        interval["us"] = _to_us(_values(s), dtype.time_unit)
        payload = interval
    else:
        values = _values(s)
        if isinstance(dtype, pl.Datetime):
            values = _to_us(values, dtype.time_unit) - _PG_EPOCH_US
        elif dtype == pl.Date:
            values = values - _PG_EPOCH_DAYS
        elif dtype == pl.Time:
            values = values // 1000
        wire = next((w for cls, w in _WIRE.items() if dtype == cls or isinstance(dtype, cls)), None)
        if wire is None:
            raise TypeError(f"encode has no layout for prepared dtype {dtype}")
        payload = values.astype(wire)
    size = payload.dtype.itemsize
    if valid is None:
        return [_Fixed(np.dtype(">i4"), size), _Fixed(payload.dtype, payload)]
    lengths = np.full(len(s), size, dtype=np.int64)
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    starts = pa.py_buffer(np.arange(0, (len(s) + 1) * size, size, dtype=np.int64))
    data = pa.py_buffer(np.ascontiguousarray(payload).view(np.uint8))
    arr = pa.Array.from_buffers(pa.large_binary(), len(s), [bitmap, starts, data])
    return [_length(valid, lengths), _Var(arr)]


def _length(valid: NDArray[np.bool_] | None, lengths: NDArray[np.int64]) -> _Fixed:
    """The 4-byte length word of a field, -1 where the value is null."""
    if valid is not None:
        lengths = np.where(valid, lengths, -1)
    return _Fixed(np.dtype(">i4"), lengths)


def _values(s: pl.Series) -> NDArray[np.generic]:
    """The physical values as numpy, nulls filled so no object arrays appear."""
    phys = s.to_physical()
    if phys.null_count():
        phys = phys.fill_null(False if phys.dtype == pl.Boolean else 0)
    return phys.to_numpy()


def _to_us(values: NDArray[np.generic], unit: str) -> NDArray[np.int64]:
    """Convert int64 ticks in a polars time unit to microseconds, flooring nanoseconds."""
    factor = _US_PER_UNIT[unit]
    ticks = values.astype(np.int64)
    return ticks // -factor if factor < 0 else ticks * factor


def _segments(parts: list[_Fixed | _Var], n: int) -> list[pa.Array]:
    """Merge runs of fixed parts into one row-major block each; keep var parts as they are."""
    arrays: list[pa.Array] = []
    run: list[_Fixed] = []
    for part in [*parts, None]:
        if isinstance(part, _Fixed):
            run.append(part)
            continue
        if run:
            arrays.append(_block(run, n))
            run = []
        if isinstance(part, _Var):
            arrays.append(part.data)
    return arrays


def _block(run: list[_Fixed], n: int) -> pa.Array:
    """Lay out fixed parts side by side per row (a big-endian structured array) as large_binary."""
    names = [f"f{i}" for i in range(len(run))]
    layout = np.dtype({"names": names, "formats": [p.dtype for p in run]})
    width = layout.itemsize
    template = np.zeros(1, dtype=layout)
    for name, part in zip(names, run, strict=True):
        if isinstance(part.value, int):
            template[name] = part.value
    buffer = pa.allocate_buffer(n * width)
    block = np.frombuffer(buffer, dtype=layout)
    block.view(f"V{width}")[...] = template.view(f"V{width}")[0]  # one memcpy-like pass
    for name, part in zip(names, run, strict=True):
        if not isinstance(part.value, int):
            block[name] = part.value
    starts = pa.py_buffer(np.arange(0, (n + 1) * width, width, dtype=np.int64))
    return pa.Array.from_buffers(pa.large_binary(), n, [None, starts, buffer])


def _decimal(s: pl.Series) -> NDArray[np.void]:
    """Numeric payloads of a Decimal column: int64 math for p <= 18, 32-bit limbs above that."""
    dtype = s.dtype
    assert isinstance(dtype, pl.Decimal)
    precision, scale = dtype.precision or 38, dtype.scale
    arr = s.to_arrow()
    words = np.frombuffer(arr.buffers()[1], dtype=np.uint64)[
        2 * arr.offset : 2 * (arr.offset + len(s))
    ]
    lo, hi = words[0::2], words[1::2]
    if arr.null_count:
        valid = s.is_not_null().to_numpy()
        lo, hi = np.where(valid, lo, 0), np.where(valid, hi, 0)
    neg = hi.view(np.int64) < 0
    int_groups = max(0, math.ceil((precision - scale) / 4))
    frac_groups = math.ceil(scale / 4)
    if precision <= 18:
        magnitude = np.abs(lo.view(np.int64)).view(np.uint64)
        whole = magnitude // np.uint64(10**scale)
        frac = magnitude - whole * np.uint64(10**scale)
        digits = np.empty((len(s), int_groups + frac_groups), dtype=np.int16)
        digits[:, :int_groups] = _base10000(whole, int_groups)
        for j in range(1, frac_groups + 1):
            if 4 * j <= scale:
                group = (frac // np.uint64(10 ** (scale - 4 * j))) % np.uint64(10_000)
            else:  # the last, partial group: pad it with zeros on the right
                group = (frac % np.uint64(10 ** (scale - 4 * j + 4))) * np.uint64(
                    10 ** (4 * j - scale)
                )
            digits[:, int_groups + j - 1] = group
    else:
        digits = _wide_digits(
            lo, hi, neg, 10 ** (4 * frac_groups - scale), int_groups + frac_groups
        )
    return _numeric(neg, digits, int_groups, scale)


def _wide_digits(
    lo: NDArray[np.uint64], hi: NDArray[np.uint64], neg: NDArray[np.bool_], shift: int, groups: int
) -> NDArray[np.int16]:
    """Base-10000 digits of |128-bit two's complement| * shift, by long division on 32-bit limbs."""
    mask = np.uint64(0xFFFF_FFFF)
    lo_mag = np.where(neg, ~lo + np.uint64(1), lo)
    hi_mag = np.where(neg, ~hi + (lo == 0).astype(np.uint64), hi)
    # Five limbs (160 bits), most significant first: 10**38 * 1000 needs more than 128 bits.
    limbs = [
        np.zeros_like(lo),
        hi_mag >> np.uint64(32),
        hi_mag & mask,
        lo_mag >> np.uint64(32),
        lo_mag & mask,
    ]
    carry = np.zeros_like(lo)
    for i in range(len(limbs) - 1, -1, -1):
        product = limbs[i] * np.uint64(shift) + carry
        limbs[i], carry = product & mask, product >> np.uint64(32)
    digits = np.empty((len(lo), groups), dtype=np.int16)
    for k in range(groups - 1, -1, -1):
        rest = np.zeros_like(lo)
        for i, limb in enumerate(limbs):
            current = (rest << np.uint64(32)) | limb
            limbs[i] = current // np.uint64(10_000)
            rest = current - limbs[i] * np.uint64(10_000)
        digits[:, k] = rest
    return digits


def _base10000(values: NDArray[np.uint64], groups: int) -> NDArray[np.int16]:
    """Split non-negative integers into `groups` base-10000 digits, most significant first."""
    digits = np.empty((len(values), groups), dtype=np.int16)
    for k in range(groups - 1, -1, -1):
        quotient = values // np.uint64(10_000)
        digits[:, k] = values - quotient * np.uint64(10_000)
        values = quotient
    return digits


def _numeric(
    neg: NDArray[np.bool_], digits: NDArray[np.int16], int_groups: int, dscale: int
) -> NDArray[np.void]:
    """PostgreSQL NumericVar payloads with one digit count per batch (numeric_recv strips zeros)."""
    nonzero: NDArray[np.bool_] = np.asarray(digits.any(axis=0))
    lead = 0
    while lead < int_groups and not nonzero[lead]:
        lead += 1
    end = len(nonzero)
    while end > int_groups and not nonzero[end - 1]:
        end -= 1
    digits, int_groups = digits[:, lead:end], int_groups - lead
    ndigits = digits.shape[1]
    words = np.empty((len(neg), 4 + ndigits), dtype=">i2")
    words[:, 0] = ndigits
    words[:, 1] = int_groups - 1 if ndigits else 0
    words[:, 2] = np.where(neg, 0x4000, 0)
    words[:, 3] = dscale
    words[:, 4:] = digits
    return words.view(f"V{words.shape[1] * 2}").reshape(len(neg))
