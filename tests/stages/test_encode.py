"""The binary COPY encoder: hand-checked bytes offline, exact round trips through PostgreSQL."""

from __future__ import annotations

import datetime as dt
import math
import struct
import subprocess
import sys
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest
from psycopg import sql

from ingest.stages.encode import HEADER, TRAILER, encode, pg_type, prepare, stamp

UTC = dt.UTC
Row = list[bytes | None]


def parse(data: bytes | memoryview) -> list[Row]:
    """Split binary COPY tuples (no header or trailer) into their raw fields, None for NULL."""
    raw, rows, at = bytes(data), [], 0
    while at < len(raw):
        (count,), at = struct.unpack_from(">h", raw, at), at + 2
        row: Row = []
        for _ in range(count):
            (size,), at = struct.unpack_from(">i", raw, at), at + 4
            row.append(None if size == -1 else raw[at : at + size])
            at += max(size, 0)
        rows.append(row)
    return rows


def numeric_value(field: bytes) -> Decimal:
    """Decode PostgreSQL's binary numeric (base-10000 NumericVar) into a Decimal."""
    ndigits, weight, sign, dscale = struct.unpack_from(">hhHh", field)
    digits = struct.unpack_from(f">{ndigits}h", field, 8)
    assert all(0 <= d < 10_000 for d in digits)
    with localcontext(prec=100):  # 38-digit numerics need more than the default 28 digits
        value = sum(
            (Decimal(d) * Decimal(10_000) ** (weight - i) for i, d in enumerate(digits)), Decimal(0)
        )
        return (-value if sign == 0x4000 else value).quantize(Decimal(1).scaleb(-dscale))


def test_header_and_trailer_are_the_documented_bytes() -> None:
    """HEADER is the 11-byte signature, zero flags and a zero extension length; TRAILER is -1."""
    assert HEADER == b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
    assert len(HEADER) == 19
    assert TRAILER == b"\xff\xff"


def test_int_text_and_null_row_matches_hand_computed_bytes() -> None:
    """One row of int4 1, text 'hé' and a NULL bigint is exactly the bytes the docs describe."""
    df = pl.DataFrame(
        {"i": [1], "s": ["hé"], "n": [None]}, schema={"i": pl.Int32, "s": pl.String, "n": pl.Int64}
    )
    expected = (
        b"\x00\x03"
        + b"\x00\x00\x00\x04\x00\x00\x00\x01"
        + b"\x00\x00\x00\x03h\xc3\xa9"
        + b"\xff\xff\xff\xff"
    )
    assert bytes(encode(df)) == expected


def test_fixed_width_layouts_are_big_endian() -> None:
    """bool, int2/4/8, float4/8, date, timestamp and time use the documented big-endian payloads."""
    df = pl.DataFrame(
        {
            "b": [True],
            "h": pl.Series([-2], dtype=pl.Int16),
            "i": pl.Series([-3], dtype=pl.Int32),
            "l": [2**62],
            "f": pl.Series([1.5], dtype=pl.Float32),
            "d": [-0.0],
            "day": [dt.date(1999, 12, 31)],
            "ts": [dt.datetime(2000, 1, 1, 0, 0, 1)],
            "t": [dt.time(0, 0, 0, 7)],
            "iv": [dt.timedelta(days=1, microseconds=3)],
        }
    )
    (row,) = parse(encode(df))
    assert row[0] == b"\x01"
    assert row[1:6] == [
        struct.pack(">h", -2),
        struct.pack(">i", -3),
        struct.pack(">q", 2**62),
        struct.pack(">f", 1.5),
        struct.pack(">d", -0.0),
    ]
    assert row[6] == struct.pack(">i", -1)  # days since 2000-01-01
    assert row[7] == struct.pack(">q", 1_000_000)  # microseconds since 2000-01-01
    assert row[8] == struct.pack(">q", 7)
    assert row[9] == struct.pack(">qii", 86_400_000_003, 0, 0)


@pytest.mark.parametrize(
    ("dtype", "values"),
    [
        (pl.Decimal(15, 2), ["12345678.90", "-0.01", "0", None, "9999999999999.99"]),
        (pl.Decimal(10, 1), ["12345678.9", "-12345678.9", "0.1"]),
        (pl.Decimal(18, 0), ["999999999999999999", "-999999999999999999", "10000", "0"]),
        (pl.Decimal(18, 18), ["0.123456789012345678", "-0.000000000000000001", "0"]),
        (pl.Decimal(9, 5), ["1234.56789", "-0.00001", "1.5"]),
        (pl.Decimal(18, 13), ["-12345.6789012345678", "0.0000000000001", "99999.9999999999999"]),
        (pl.Decimal(17, 16), ["9.9999999999999999", "-0.0000000000000001"]),
        (pl.Decimal(38, 0), ["99999999999999999999999999999999999999", "-1", "0"]),
        (pl.Decimal(38, 10), ["-9999999999999999999999999999.9999999999", "0.0000000001"]),
        (pl.Decimal(38, 38), ["0.99999999999999999999999999999999999999", "-0.1"]),
        (pl.Decimal(20, 3), ["12345678901234567.891", "-0.001", None]),
    ],
)
def test_numeric_payload_decodes_to_the_same_decimal(
    dtype: pl.Decimal, values: list[str | None]
) -> None:
    """Decimal columns become valid base-10000 NumericVars carrying the exact value and scale."""
    series = pl.Series("x", [None if v is None else Decimal(v) for v in values], dtype=dtype)
    fields = [row[0] for row in parse(encode(series.to_frame()))]
    decoded = [None if f is None else numeric_value(f) for f in fields]
    assert decoded == series.to_list()
    assert [str(d) for d in decoded if d is not None] == [
        str(v) for v in series.to_list() if v is not None
    ]


def test_all_zero_decimal_batch_sends_ndigits_zero() -> None:
    """A batch of zeros sends the canonical zero: no digits, weight 0, positive sign."""
    series = pl.Series("x", [Decimal("0.00")] * 3, dtype=pl.Decimal(12, 2))
    fields = [row[0] for row in parse(encode(series.to_frame()))]
    assert fields == [struct.pack(">hhHh", 0, 0, 0, 2)] * 3


def test_uint64_becomes_numeric_without_loss() -> None:
    """UInt64 values up to 2**64-1 are sent as exact numerics."""
    series = pl.Series("u", [0, 2**64 - 1, 10_000, None], dtype=pl.UInt64)
    fields = [row[0] for row in parse(encode(series.to_frame()))]
    assert [None if f is None else numeric_value(f) for f in fields] == [
        Decimal(0),
        Decimal(2**64 - 1),
        Decimal(10_000),
        None,
    ]


def test_jsonb_fields_start_with_version_byte() -> None:
    """List and Struct values are sent as version 1 + JSON text; null lists stay NULL."""
    df = pl.DataFrame({"l": [[1, 2], None], "s": [{"a": "x"}, None]})
    rows = parse(encode(df))
    assert rows[0] == [b"\x01[1,2]", b'\x01{"a":"x"}']
    assert rows[1] == [None, None]


def test_nullable_fixed_columns_skip_payload_for_nulls() -> None:
    """Nulls in fixed-width columns write only the length -1; neighbours stay aligned."""
    df = pl.DataFrame({"a": [1, None, 3], "b": ["x", "y", None], "c": [None, 2.5, None]})
    assert parse(encode(df)) == [
        [struct.pack(">q", 1), b"x", None],
        [None, b"y", struct.pack(">d", 2.5)],
        [struct.pack(">q", 3), None, None],
    ]


def test_equal_length_text_is_written_like_any_other_text() -> None:
    """Codes of one width, all-empty strings and equal-length bytes keep their exact bytes."""
    df = pl.DataFrame(
        {
            "code": ["AB", "CD", "éé"[:1] * 2],
            "empty": ["", "", ""],
            "raw": [b"\x00\x01", b"\xff\xfe", b"\x10\x20"],
            "n": [1, 2, 3],
        }
    )
    rows = parse(encode(df))
    assert rows == [
        [b"AB", b"", b"\x00\x01", struct.pack(">q", 1)],
        [b"CD", b"", b"\xff\xfe", struct.pack(">q", 2)],
        ["éé".encode(), b"", b"\x10\x20", struct.pack(">q", 3)],
    ]


def test_slices_and_chunked_frames_encode_like_fresh_frames() -> None:
    """Arrow offsets of sliced and multi-chunk frames are honoured."""
    whole = pl.DataFrame(
        {
            "i": list(range(10)),
            "s": [f"v{i}" * i for i in range(10)],
            "d": pl.Series([Decimal(i) / 4 for i in range(10)], dtype=pl.Decimal(6, 2)),
        }
    )
    rows = parse(encode(whole))
    assert parse(encode(whole.slice(3, 4))) == rows[3:7]
    chunked = pl.concat([whole.slice(0, 5), whole.slice(5, 5)], rechunk=False)
    assert chunked.n_chunks() == 2
    assert parse(encode(chunked)) == rows


def test_prepare_is_idempotent_and_encode_accepts_either_form() -> None:
    """Encoding a prepared frame gives the same bytes as encoding the original."""
    df = pl.DataFrame(
        {
            "u8": pl.Series([1, 255], dtype=pl.UInt8),
            "cat": pl.Series(["a", "b"], dtype=pl.Categorical),
            "l": [[1], []],
        }
    )
    once = prepare(df)
    assert once.schema == prepare(once).schema
    assert once.schema == pl.Schema({"u8": pl.Int16, "cat": pl.String, "l": pl.String})
    assert bytes(encode(once)) == bytes(encode(df))


def test_empty_frame_encodes_to_nothing() -> None:
    """A frame without rows yields no bytes."""
    assert bytes(encode(pl.DataFrame({"a": []}, schema={"a": pl.Int64}))) == b""


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (pl.Boolean(), "boolean"),
        (pl.Int8(), "smallint"),
        (pl.Int16(), "smallint"),
        (pl.UInt8(), "smallint"),
        (pl.Int32(), "integer"),
        (pl.UInt16(), "integer"),
        (pl.Int64(), "bigint"),
        (pl.UInt32(), "bigint"),
        (pl.UInt64(), "numeric(20,0)"),
        (pl.Float32(), "real"),
        (pl.Float64(), "double precision"),
        (pl.Decimal(15, 2), "numeric(15,2)"),
        (pl.String(), "text"),
        (pl.Categorical(), "text"),
        (pl.Enum(["a"]), "text"),
        (pl.Binary(), "bytea"),
        (pl.Date(), "date"),
        (pl.Datetime("ns"), "timestamp"),
        (pl.Datetime("us", "Europe/Berlin"), "timestamptz"),
        (pl.Time(), "time"),
        (pl.Duration("ms"), "interval"),
        (pl.List(pl.Int64), "jsonb"),
        (pl.Array(pl.Int64, 2), "jsonb"),
        (pl.Struct({"a": pl.Int64}), "jsonb"),
        (pl.Null(), "text"),
    ],
)
def test_pg_type_maps_each_dtype(dtype: pl.DataType, expected: str) -> None:
    """Each supported polars dtype gets the documented PostgreSQL column type."""
    assert pg_type(dtype) == expected


@pytest.mark.parametrize(
    "series",
    [pl.Series([1], dtype=pl.Int128), pl.Series([object()], dtype=pl.Object)],
    ids=["int128", "object"],
)
def test_pg_type_and_encode_reject_unsupported_dtypes(series: pl.Series) -> None:
    """Unsupported dtypes raise TypeError naming the dtype, in pg_type and in encode."""
    with pytest.raises(TypeError, match=str(series.dtype)):
        pg_type(series.dtype)
    with pytest.raises(TypeError, match=f"column 'bad': .*{series.dtype}"):
        encode(series.alias("bad").to_frame())


# ---- round trips through the real server -------------------------------------------------

TEXTS = [
    "",
    "plain",
    "é",
    "日本語",
    "😀 emoji",
    "tab\there",
    "new\nline",
    "cr\rlf\r\n",
    'quote"s',
    "it's",
    "back\\slash",
    "comma,semi;",
    "\\N",
    None,
]
ROUND_TRIPS: list[tuple[str, pl.Series, list[Any] | None]] = [
    ("bool", pl.Series([True, False, None]), None),
    ("int8", pl.Series([-128, 127, 0, None], dtype=pl.Int8), None),
    ("uint8", pl.Series([0, 255, None], dtype=pl.UInt8), None),
    ("int16", pl.Series([-(2**15), 2**15 - 1, None], dtype=pl.Int16), None),
    ("uint16", pl.Series([0, 2**16 - 1, None], dtype=pl.UInt16), None),
    ("int32", pl.Series([-(2**31), 2**31 - 1, -1, None], dtype=pl.Int32), None),
    ("uint32", pl.Series([0, 2**32 - 1, None], dtype=pl.UInt32), None),
    ("int64", pl.Series([-(2**63), 2**63 - 1, -1, 0, None], dtype=pl.Int64), None),
    (
        "uint64",
        pl.Series([0, 2**64 - 1, 2**63, None], dtype=pl.UInt64),
        [Decimal(0), Decimal(2**64 - 1), Decimal(2**63), None],
    ),
    (
        "float32",
        pl.Series(
            [1.5, -0.0, math.nan, math.inf, -math.inf, 3.4028234663852886e38, 1e-45, None],
            dtype=pl.Float32,
        ),
        None,
    ),
    (
        "float64",
        pl.Series([0.1, -0.0, math.nan, math.inf, -math.inf, 1.7976931348623157e308, 5e-324, None]),
        None,
    ),
    (
        "dec_15_2",
        pl.Series(
            [Decimal(v) for v in ["12345678.90", "-0.01", "0", "-9999999999999.99"]] + [None],
            dtype=pl.Decimal(15, 2),
        ),
        None,
    ),
    (
        "dec_10_1",
        pl.Series(
            [Decimal("12345678.9"), Decimal("-12345678.9"), Decimal("0.0")], dtype=pl.Decimal(10, 1)
        ),
        None,
    ),
    (
        "dec_18_0",
        pl.Series(
            [Decimal("999999999999999999"), Decimal("-999999999999999999"), Decimal(0)],
            dtype=pl.Decimal(18, 0),
        ),
        None,
    ),
    (
        "dec_18_18",
        pl.Series(
            [Decimal("0.123456789012345678"), Decimal("-0.000000000000000001")],
            dtype=pl.Decimal(18, 18),
        ),
        None,
    ),
    (
        "dec_38_0",
        pl.Series(
            [
                Decimal("99999999999999999999999999999999999999"),
                Decimal("-99999999999999999999999999999999999999"),
                Decimal(0),
            ],
            dtype=pl.Decimal(38, 0),
        ),
        None,
    ),
    (
        "dec_38_6",
        pl.Series(
            [Decimal("12345678901234567890.123456"), Decimal("-0.000001"), None],
            dtype=pl.Decimal(38, 6),
        ),
        None,
    ),
    (
        "dec_38_37",
        pl.Series(
            [
                Decimal("9.9999999999999999999999999999999999999"),
                Decimal("-0.0000000000000000000000000000000000001"),
            ],
            dtype=pl.Decimal(38, 37),
        ),
        None,
    ),
    ("text", pl.Series(TEXTS), None),
    ("text_one_width", pl.Series(["N", "O", "R"]), None),
    ("text_all_empty", pl.Series(["", ""]), None),
    ("text_one_width_nulls", pl.Series(["AB", None, "ÿ"]), None),
    ("categorical", pl.Series(["a", "b", None, "a"], dtype=pl.Categorical), None),
    ("enum", pl.Series(["lo", "hi", None], dtype=pl.Enum(["lo", "hi"])), None),
    ("bytea", pl.Series([b"", b"\x00\xff\x01", bytes(range(256)), None]), None),
    ("bytea_one_width", pl.Series([b"\x00\x00", b"\xff\xff"]), None),
    (
        "date",
        pl.Series(
            [
                dt.date(1, 1, 1),
                dt.date(1900, 1, 1),
                dt.date(1999, 12, 31),
                dt.date(2000, 1, 1),
                dt.date(2038, 1, 20),
                dt.date(9999, 12, 31),
                None,
            ]
        ),
        None,
    ),
    (
        "timestamp_us",
        pl.Series(
            [
                dt.datetime(1, 1, 1),
                dt.datetime(1969, 12, 31, 23, 59, 59, 999_999),
                dt.datetime(2000, 1, 1),
                dt.datetime(2038, 1, 19, 3, 14, 8),
                dt.datetime(9999, 12, 31, 23, 59, 59, 999_999),
                None,
            ]
        ),
        None,
    ),
    (
        "timestamp_ns",
        pl.Series(
            [dt.datetime(1700, 1, 1, 0, 0, 0, 1), dt.datetime(2262, 4, 11), None],
            dtype=pl.Datetime("ns"),
        ),
        None,
    ),
    (
        "timestamp_ms",
        pl.Series(
            [dt.datetime(1500, 6, 1, 12, 0, 0, 123_000), dt.datetime(3000, 1, 1), None],
            dtype=pl.Datetime("ms"),
        ),
        None,
    ),
    (
        "timestamptz",
        pl.Series(
            [
                dt.datetime(1890, 3, 4, 5, 6, 7, 8),
                dt.datetime(2024, 7, 1, 12),
                dt.datetime(2100, 12, 31, 23, 59),
                None,
            ]
        ).dt.replace_time_zone("Asia/Kolkata"),
        None,
    ),
    (
        "timestamptz_utc_ns",
        pl.Series(
            [dt.datetime(1999, 12, 31, 23, 59, 59, 999_999), None], dtype=pl.Datetime("ns", "UTC")
        ),
        None,
    ),
    (
        "time",
        pl.Series([dt.time(0), dt.time(23, 59, 59, 999_999), dt.time(12, 34, 56, 789), None]),
        None,
    ),
    (
        "duration_us",
        pl.Series(
            [
                dt.timedelta(0),
                dt.timedelta(days=-1, microseconds=1),
                dt.timedelta(days=40_000, seconds=5),
                None,
            ]
        ),
        None,
    ),
    (
        "duration_ns",
        pl.Series([dt.timedelta(hours=-5, microseconds=7), None], dtype=pl.Duration("ns")),
        None,
    ),
    (
        "duration_ms",
        pl.Series([dt.timedelta(milliseconds=-1500), None], dtype=pl.Duration("ms")),
        None,
    ),
    (
        "list_int",
        pl.Series([[1, 2], [], None, [None, -(2**63)]]),
        [[1, 2], [], None, [None, -(2**63)]],
    ),
    (
        "list_text",
        pl.Series([['q"uote', "back\\slash", "é\n"], None]),
        [['q"uote', "back\\slash", "é\n"], None],
    ),
    ("list_float", pl.Series([[1.5, math.nan, -0.0], None]), [[1.5, None, -0.0], None]),
    ("array", pl.Series([[1, 2], None], dtype=pl.Array(pl.Int64, 2)), [[1, 2], None]),
    (
        "struct",
        pl.Series([{"a": 1, "b": "x"}, {"a": None, "b": ""}, None]),
        [{"a": 1, "b": "x"}, {"a": None, "b": ""}, None],
    ),
    ("null", pl.Series([None, None], dtype=pl.Null), None),
]


def same(got: Any, want: Any) -> bool:
    """Equality that treats NaN as NaN, tells -0.0 from 0.0 and a Decimal's scale from another."""
    if isinstance(want, float):
        if math.isnan(want):
            return isinstance(got, float) and math.isnan(got)
        return bool(got == want) and math.copysign(1, got) == math.copysign(1, want)
    if isinstance(want, Decimal):
        return isinstance(got, Decimal) and got == want and str(got) == str(want)
    return bool(got == want)


def copy_in(
    conn: psycopg.Connection[Any], table: sql.Identifier, df: pl.DataFrame, pieces: int = 1
) -> None:
    """Create `table` from the frame's pg_types and COPY the frame into it in binary."""
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(pg_type(dtype)))
        for name, dtype in df.schema.items()
    )
    conn.execute(sql.SQL("create table {} ({})").format(table, columns))
    names = sql.SQL(", ").join(map(sql.Identifier, df.columns))
    with (
        conn.cursor() as cur,
        cur.copy(sql.SQL("copy {} ({}) from stdin (format binary)").format(table, names)) as copy,
    ):
        copy.write(HEADER)
        for piece in df.iter_slices(max(1, math.ceil(df.height / pieces))):
            copy.write(encode(piece))
        copy.write(TRAILER)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("name", "series", "expected"), ROUND_TRIPS, ids=[case[0] for case in ROUND_TRIPS]
)
def test_round_trip_through_postgres(
    pg_conn: psycopg.Connection[Any],
    pg_schema: str,
    name: str,
    series: pl.Series,
    expected: list[Any] | None,
) -> None:
    """Every supported dtype reads back from PostgreSQL exactly as written, nulls included."""
    df = pl.DataFrame({"id": range(len(series)), "v": series})
    table = sql.Identifier(pg_schema, name)
    copy_in(pg_conn, table, df)
    query = sql.SQL("select v from {} order by id").format(table)
    got = [row[0] for row in pg_conn.cursor(binary=True).execute(query)]  # binary: exact floats
    want = series.to_list() if expected is None else expected
    assert len(got) == len(want)
    assert all(same(g, w) for g, w in zip(got, want, strict=True)), (got, want)


@pytest.mark.integration
def test_decimal_text_keeps_scale_and_sign(
    pg_conn: psycopg.Connection[Any], pg_schema: str
) -> None:
    """numeric columns print with their declared scale: 0.00, -0.01, 12345678.90."""
    series = pl.Series(
        [Decimal("0"), Decimal("-0.01"), Decimal("12345678.9")], dtype=pl.Decimal(12, 2)
    )
    table = sql.Identifier(pg_schema, "d")
    copy_in(pg_conn, table, pl.DataFrame({"id": [0, 1, 2], "v": series}))
    got = [
        r[0] for r in pg_conn.execute(sql.SQL("select v::text from {} order by id").format(table))
    ]
    assert got == ["0.00", "-0.01", "12345678.90"]
    (zero_is_zero,) = pg_conn.execute(
        sql.SQL("select v = 0 and v::text = '0.00' from {} where id = 0").format(table)
    ).fetchone() or (None,)
    assert zero_is_zero is True


@pytest.mark.integration
def test_timestamptz_stores_the_utc_instant(
    pg_conn: psycopg.Connection[Any], pg_schema: str
) -> None:
    """A zoned datetime lands as the same instant: its epoch seconds match."""
    series = pl.Series([dt.datetime(2024, 1, 1, 5, 30)]).dt.replace_time_zone("Asia/Kolkata")
    table = sql.Identifier(pg_schema, "tz")
    copy_in(pg_conn, table, pl.DataFrame({"id": [0], "v": series}))
    (epoch,) = pg_conn.execute(
        sql.SQL("select extract(epoch from v) from {}").format(table)
    ).fetchone() or (None,)
    assert epoch == Decimal(int(dt.datetime(2024, 1, 1, 0, 0, tzinfo=UTC).timestamp()))


@pytest.mark.integration
def test_mixed_frame_in_several_pieces_round_trips(
    pg_conn: psycopg.Connection[Any], pg_schema: str
) -> None:
    """A wide frame with nulls everywhere, sent in several pieces, reads back row for row."""
    n = 3_000
    ids = pl.int_range(0, n, eager=True)
    df = pl.DataFrame(
        {
            "id": ids,
            "i": pl.Series([None if i % 7 == 0 else i * 1_000_003 - 10**9 for i in range(n)]),
            "s": pl.Series([None if i % 5 == 0 else "é" * (i % 13) + str(i) for i in range(n)]),
            "d": pl.Series(
                [None if i % 11 == 0 else Decimal(i * 37 - 50_000) / 100 for i in range(n)],
                dtype=pl.Decimal(12, 2),
            ),
            "day": pl.Series([dt.date(1990, 1, 1) + dt.timedelta(days=i * 9) for i in range(n)]),
            "b": pl.Series([None if i % 3 == 0 else b"\x00" * (i % 4) for i in range(n)]),
            "f": pl.Series([i / 3 for i in range(n)], dtype=pl.Float32),
        }
    )
    table = sql.Identifier(pg_schema, "mixed")
    copy_in(pg_conn, table, df, pieces=4)
    query = sql.SQL("select * from {} order by id").format(table)
    got = pg_conn.cursor(binary=True).execute(query).fetchall()
    assert [list(row) for row in got] == [list(row) for row in df.rows()]


def test_importing_ingest_leaves_the_host_process_alone() -> None:
    """The library installs no import hook and does not load pandera until a check needs it."""
    code = """
import sys
hooks = list(sys.meta_path)
import ingest, ingest.run
from ingest.stages import validate
assert sys.meta_path == hooks, sys.meta_path
assert "pandera" not in sys.modules
import pandas, pandera.polars  # a host that uses pandas still gets it, with pandera
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_a_load_never_imports_pandas(tmp_path: Path) -> None:
    """pandas, installed here for the dev data sets, stays out of a load run from this
    project's entry points (tasks.py calls `lean_imports`): ~45 MB of RSS.

    pandera imports it when installed, and so do some pyarrow calls (e.g. `pa.scalar`).
    """
    data = tmp_path / "t.parquet"
    pl.DataFrame(
        {"id": [1, 2, None], "name": ["a", None, "ccc"], "x": [1.5, 2.0, 3.0]}
    ).write_parquet(data)
    code = f"""
import importlib.util, sys
from pathlib import Path
assert importlib.util.find_spec("pandas"), "this test needs pandas installed"
import ingest.run, tasks
from ingest.stages import encode
from ingest.stages import read
from ingest.stages import validate
from ingest.stages.cast import CastPlan
from ingest.config import CsvOptions, ValidationConfig
from ingest.stages.plan import make_plan
from ingest.stages.profile import profile_file
from tests.stages.partitions import whole_file
profile = profile_file(Path({str(data)!r}), "parquet", 100, CsvOptions())
plan = make_plan(profile, 1 << 30, base_bytes=0, forced="streaming")
chunks = read.batches(whole_file(profile.path, "parquet", True), CsvOptions(), profile.schema, plan)
for i, chunk in enumerate(chunks):
    out = validate.split_batch(
        chunk.frame, CastPlan({{}}, {{}}, None), profile.schema, ValidationConfig(), seed=i
    )
    encode.encode(out.good)
print(" ".join(m for m in ("pandas", "polars", "pyarrow") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "polars pyarrow"


def test_a_stamp_leads_every_row_as_if_its_columns_came_first() -> None:
    """Constant fields encoded once give the very bytes of constant columns placed first."""
    df = pl.DataFrame({"n": [1, None, 3], "s": ["a", "a longer value", None]})
    constants = pl.DataFrame(
        [
            pl.Series("at", [dt.datetime(2026, 11, 27, 6, 0, tzinfo=UTC)]),
            pl.Series("id", [bytes(range(16))], pl.Binary),
        ]
    )
    wide = pl.concat([pl.concat([constants] * df.height), df], how="horizontal")

    assert bytes(encode(df, stamp(constants))) == bytes(encode(wide))
    with pytest.raises(ValueError, match="one row"):
        stamp(pl.concat([constants, constants]))
