"""Turn a polars DataFrame into PostgreSQL binary COPY tuples with numpy/pyarrow kernels."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

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
_Ints = NDArray[Any]  # integer arrays whose width (uint32/uint64) is picked at run time


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
class _Fixed:
    """A fixed-width part of every row: a constant, per-row values, or a writer that fills them."""

    dtype: str
    value: int | bytes | _Ints | Callable[[_Ints], object]


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
    # Each run of fixed-width fields becomes one big-endian structured block (a row-major
    # array filled column by column with numpy); Arrow then concatenates, row by row, the
    # blocks and the variable-width values in one C++ pass that releases the GIL.
    df = prepare(df).rechunk()
    if df.height == 0:
        return memoryview(b"")
    parts: list[_Fixed | pa.Array] = [_Fixed(">i2", df.width + (lead.fields if lead else 0))]
    if lead is not None and lead.data:
        parts.append(_Fixed(f"V{len(lead.data)}", lead.data))
    for series in df.get_columns():
        parts.extend(_column_parts(series))
    arrays = _segments(parts, df.height)
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


def _column_parts(s: pl.Series) -> list[_Fixed | pa.Array]:
    """The length word and payload parts of one prepared column."""
    n = len(s)
    invalid = s.is_null().to_numpy() if s.null_count() else None
    if type(s.dtype) in (pl.String, pl.Binary):
        return _text_parts(s, invalid)
    payload = _payload(s)
    size = sum(np.dtype(part.dtype).itemsize for part in payload)
    if invalid is None:
        return [_Fixed(">i4", size), *payload]

    def null_lengths(out: _Ints) -> None:
        out[...] = size
        np.copyto(out, -1, where=invalid)

    # A null writes only its length word, so the payload leaves the fixed block.
    bitmap = pa.py_buffer(np.packbits(~invalid, bitorder="little"))
    data = pa.Array.from_buffers(
        pa.large_binary(), n, [bitmap, _starts(n, size), _pack(payload, n)]
    )
    return [_Fixed(">i4", null_lengths), data]


def _text_parts(s: pl.Series, invalid: NDArray[np.bool_] | None) -> list[_Fixed | pa.Array]:
    """Length words and bytes of a text column; equal-length values join the fixed block."""
    n = len(s)
    # Polars converts its string views to offsets while holding the GIL; Arrow's cast does not.
    arr = s.to_arrow(compat_level=pl.CompatLevel.newest()).cast(pa.large_binary())
    ends = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    lengths = np.subtract(ends[1:], ends[:-1], out=_empty(n, np.int64))
    if invalid is not None:
        np.copyto(lengths, -1, where=invalid)
    elif (width := int(lengths.min())) == int(lengths.max()):
        # Codes, flags, hashes: a fixed width saves the join a piece per row.
        if width == 0:
            return [_Fixed(">i4", 0)]
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[ends[0] : ends[-1]]
        return [_Fixed(">i4", width), _Fixed(f"V{width}", data.view(f"V{width}"))]
    return [_Fixed(">i4", lengths), arr]


def _payload(s: pl.Series) -> list[_Fixed]:
    """The fixed-width payload parts of a non-text prepared column (values under nulls: any)."""
    dtype = s.dtype
    if isinstance(dtype, pl.Decimal):
        return _decimal(s, dtype.precision or 38, dtype.scale)
    # Numbers are their own physical form: to_physical would cost a query (~0.1 ms) a piece.
    values = s if type(dtype) in _WIRE else s.to_physical()
    if values.null_count():
        values = values.fill_null(False if values.dtype == pl.Boolean else 0)
    array = values.to_numpy()
    if type(dtype) is pl.UInt64:
        return _numeric(None, _base10000(array, _groups(int(array.max()))), None, 0)
    if isinstance(dtype, pl.Duration):  # interval: microseconds, days, months
        return [
            _Fixed(">i8", _ticks(array, dtype.time_unit, 0)),
            _Fixed(">i4", 0),
            _Fixed(">i4", 0),
        ]
    if isinstance(dtype, pl.Datetime):
        return [_Fixed(">i8", _ticks(array, dtype.time_unit, _PG_EPOCH_US))]
    if type(dtype) is pl.Time:
        return [_Fixed(">i8", _ticks(array, "ns", 0))]
    if type(dtype) is pl.Date:
        return [_Fixed(">i4", lambda out: np.subtract(array, _PG_EPOCH_DAYS, out=out))]
    wire = _WIRE.get(type(dtype))
    if wire is None:
        raise TypeError(f"encode has no binary layout for prepared dtype {dtype}")
    return [_Fixed(wire, array)]


def _ticks(array: _Ints, unit: str, epoch_us: int) -> Callable[[_Ints], None]:
    """A writer of int64 ticks in a polars time unit as microseconds since `epoch_us`."""

    def write(out: _Ints) -> None:
        if unit == "ns":  # floor, so instants before 1970 round towards the past
            np.floor_divide(array, 1000, out=out)
        elif unit == "ms":
            np.multiply(array, 1000, out=out)
        else:
            out[...] = array
        np.subtract(out, epoch_us, out=out)

    return write


def _empty(n: int, dtype: type[np.generic]) -> _Ints:
    """Scratch space from Arrow's pool: glibc would unmap big numpy temporaries and refault them."""
    return np.frombuffer(pa.allocate_buffer(n * np.dtype(dtype).itemsize), dtype=dtype)


def _starts(n: int, width: int) -> pa.Buffer:
    """Arrow offsets of `n` values of `width` bytes each (a prefix of a cached, shared buffer)."""
    cached = _STARTS.get(width)
    if cached is None or cached.size < (n + 1) * 8:
        # Room for a quarter more rows, so a run's slightly larger pieces reuse it too.
        rows = n + 1 + n // 4
        cached = pa.py_buffer(
            pl.int_range(0, rows * width, width, dtype=pl.Int64, eager=True).to_numpy()
        )
        _STARTS[width] = cached
    return cached


# Offsets depend only on the row width, and a run encodes thousands of pieces of a few widths.
# Buffers are immutable once made, so threads may share them.
_STARTS: dict[int, pa.Buffer] = {}


def _segments(parts: list[_Fixed | pa.Array], n: int) -> list[pa.Array]:
    """Merge each run of fixed parts into one row-major block; keep var parts as they are."""
    arrays: list[pa.Array] = []
    run: list[_Fixed] = []
    for part in [*parts, None]:
        if isinstance(part, _Fixed):
            run.append(part)
            continue
        if run:
            width = sum(np.dtype(p.dtype).itemsize for p in run)
            arrays.append(
                pa.Array.from_buffers(
                    pa.large_binary(), n, [None, _starts(n, width), _pack(run, n)]
                )
            )
            run = []
        if part is not None:  # variable width: a large_binary array, nulls write nothing
            arrays.append(part)
    return arrays


def _pack(run: list[_Fixed], n: int) -> pa.Buffer:
    """Lay out fixed parts side by side per row: a big-endian structured array, Arrow-allocated."""
    names = [f"f{i}" for i in range(len(run))]
    layout = np.dtype({"names": names, "formats": [p.dtype for p in run]})
    width = layout.itemsize
    template = np.zeros(1, dtype=layout)
    for name, part in zip(names, run, strict=True):
        if isinstance(part.value, (int, bytes)):
            template[name] = part.value
    buffer = pa.allocate_buffer(n * width)
    block = np.frombuffer(buffer, dtype=layout)
    block.view(f"V{width}")[...] = template.view(f"V{width}")[0]  # constants in one pass
    for name, part in zip(names, run, strict=True):
        if callable(part.value):
            part.value(block[name])  # ufuncs write straight into the strided big-endian field
        elif not isinstance(part.value, (int, bytes)):
            block[name] = part.value
    return buffer


def _decimal(s: pl.Series, precision: int, scale: int) -> list[_Fixed]:
    """Numeric parts of a Decimal column: 64-bit math for p <= 18, 32-bit limbs above."""
    n = len(s)
    arr = s.to_arrow()
    if arr.type != pa.decimal128(precision, scale):  # e.g. a narrower decimal32/64 export
        arr = arr.cast(pa.decimal128(precision, scale))
    words = np.frombuffer(arr.buffers()[1], dtype=np.uint64)[2 * arr.offset : 2 * (arr.offset + n)]
    lo, hi = words[0::2], words[1::2]
    if arr.null_count:  # zero the (arbitrary) values under nulls
        valid = s.is_not_null().to_numpy()
        lo = np.multiply(lo, valid, out=_empty(n, np.uint64))
        hi = np.multiply(hi, valid, out=_empty(n, np.uint64))
    neg = np.less(hi.view(np.int64), 0, out=_empty(n, np.bool_))
    frac_groups = math.ceil(scale / 4)
    pad = 10 ** (4 * frac_groups - scale)  # align the fraction to whole base-10000 digits
    if precision > 18 or scale > 16:  # beyond what 64-bit arithmetic holds after padding
        int_groups = max(0, math.ceil((precision - scale) / 4))
        matrix = _wide_digits(lo, hi, neg, pad, int_groups + frac_groups)
        return _numeric(neg, list(matrix.T), int_groups, scale)
    magnitude = np.abs(lo.view(np.int64), out=_empty(n, np.int64)).view(np.uint64)
    whole = np.floor_divide(magnitude, 10**scale, out=_empty(n, np.uint64))
    digits = _base10000(whole, _groups(int(whole.max())))
    fraction = np.subtract(magnitude, np.multiply(whole, 10**scale, out=whole), out=magnitude)
    padded = np.multiply(fraction, pad, out=fraction)
    return _numeric(neg, digits + _base10000(padded, frac_groups), len(digits), scale)


def _numeric(
    neg: NDArray[np.bool_] | None, digits: list[_Ints], int_groups: int | None, dscale: int
) -> list[_Fixed]:
    """NumericVar parts with one digit count per batch: numeric_recv strips the zero digits."""
    int_groups = len(digits) if int_groups is None else int_groups
    while int_groups and digits and not digits[0].any():
        digits, int_groups = digits[1:], int_groups - 1
    while len(digits) > int_groups and not digits[-1].any():
        digits = digits[:-1]
    sign: int | _Ints = 0
    if neg is not None and neg.any():
        sign = np.multiply(neg, np.uint16(0x4000), out=_empty(len(neg), np.uint16))
    head = [len(digits), int_groups - 1 if digits else 0, sign, dscale]
    return [_Fixed(">i2", v) for v in head] + [_Fixed(">i2", d) for d in digits]


def _groups(top: int) -> int:
    """How many base-10000 digits the integer `top` needs (0 for 0)."""
    count = 0
    while top:
        top, count = top // 10_000, count + 1
    return count


def _narrow(values: _Ints, bound: int) -> _Ints:
    """Values known to be below `bound` as uint32 when they fit, where division is ~4x faster."""
    if bound > 2**32 or values.dtype == np.uint32:
        return values
    narrow = _empty(len(values), np.uint32)
    np.copyto(narrow, values, casting="unsafe")
    return narrow


def _base10000(values: _Ints, groups: int) -> list[_Ints]:
    """Split non-negative integers into `groups` base-10000 digits, most significant first."""
    if groups == 0:
        return []
    values = _narrow(values, 10_000**groups)
    digits: list[_Ints] = []
    for _ in range(groups - 1):
        quotient = np.floor_divide(values, 10_000, out=_empty(len(values), values.dtype.type))
        product = np.multiply(quotient, 10_000, out=_empty(len(values), values.dtype.type))
        digits.append(np.subtract(values, product, out=product))
        values = quotient
    return [values, *reversed(digits)]


def _wide_digits(lo: _Ints, hi: _Ints, neg: NDArray[np.bool_], shift: int, groups: int) -> _Ints:
    """Base-10000 digits of |128-bit two's complement| * shift, by long division on 32-bit limbs."""
    mask = np.uint64(0xFFFF_FFFF)
    lo_mag = np.where(neg, ~lo + np.uint64(1), lo)
    hi_mag = np.where(neg, ~hi + (lo == 0).astype(np.uint64), hi)
    # Five limbs (160 bits), most significant first: 10**38 * 1000 needs more than 128 bits.
    limbs = [np.zeros_like(lo), hi_mag >> 32, hi_mag & mask, lo_mag >> 32, lo_mag & mask]
    carry = np.zeros_like(lo)
    for i in range(len(limbs) - 1, -1, -1):
        product = limbs[i] * np.uint64(shift) + carry
        limbs[i], carry = product & mask, product >> 32
    digits = np.empty((groups, len(lo)), dtype=np.uint64)
    for k in range(groups - 1, -1, -1):
        rest = np.zeros_like(lo)
        for i, limb in enumerate(limbs):
            current = (rest << 32) | limb
            limbs[i] = current // 10_000
            rest = current - limbs[i] * 10_000
        digits[k] = rest
    return digits.T
