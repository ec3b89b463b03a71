"""Hostile inputs, table-driven: each loads exactly or fails with one clear error, table intact.

Every case first loads a known table, then runs the hostile load into it with `replace`. A case
that must load asserts the values; a case that must fail asserts the error class, that the
message names the file (or the config key) and says what to do, and that the earlier table is
unchanged, row for row.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from configs import write_config
from psycopg import sql

from ingest import IngestError, load_config, run_source
from ingest.errors import BadRowsOverLimit, ConfigError, SourceFileError

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True)
class Case:
    """One hostile input: the file's bytes, config lines, and what must happen."""

    name: str
    data: bytes
    extra: str = ""
    suffix: str = ".csv"
    error: type[IngestError] | None = None
    says: str = ""  # a fragment the error (or, for a load, nothing) must contain
    rows: list[tuple[object, ...]] = field(default_factory=list)  # (id, v) loaded, by id
    column: str = "v"  # the loaded column the case reads back, quoted by the driver
    select: str = "select id, {col} from {} order by id"


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


OK2 = [(1, "a"), (2, "b")]
RAGGED_ROOM = "csv: {ragged_rows: quarantine}\nvalidation_data: {max_bad_rows: 1}"
CSV_STRUCTURE = [
    Case("plain", b"id,v\n1,a\n2,b\n", rows=OK2),
    Case("crlf", b"id,v\r\n1,a\r\n2,b\r\n", rows=OK2),
    Case("no final newline", b"id,v\n1,a\n2,b", rows=OK2),
    Case("bom", b"\xef\xbb\xbfid,v\n1,a\n2,b\n", rows=OK2),
    Case("empty line in the middle", b"id,v\n1,a\n\n2,b\n", rows=OK2),
    Case("empty lines at the end", b"id,v\n1,a\n2,b\n\n\n", rows=OK2),
    Case("crlf empty line", b"id,v\r\n1,a\r\n\r\n2,b\r\n", rows=OK2),
    Case("empty line first", b"id,v\n\n1,a\n2,b\n", rows=OK2),
    Case("too few fields", b"id,v\n1,a\n2\n", error=SourceFileError, says="line 3: 1 fields"),
    Case("too many fields", b"id,v\n1,a\n2,b,c\n", error=SourceFileError, says="line 3: 3 fields"),
    Case(
        "short row late",
        b"id,v\n" + b"".join(b"%d,x\n" % i for i in range(5000)) + b"9\n",
        error=SourceFileError,
        says="line 5,002",
    ),
    Case("unclosed quote", b'id,v\n1,a\n2,"b\n3,c\n', error=SourceFileError, says="line 3"),
    Case("stray quote", b'id,v\n1,5"7\n2,b\n', error=SourceFileError, says="line 2"),
    Case("quoted separator", b'id,v\n1,"a,b"\n2,b\n', rows=[(1, "a,b"), (2, "b")]),
    Case("quoted newline", b'id,v\n1,"a\nb"\n2,b\n', rows=[(1, "a\nb"), (2, "b")]),
    Case("doubled quotes", b'id,v\n1,"say ""hi"""\n2,b\n', rows=[(1, 'say "hi"'), (2, "b")]),
    Case(
        "quoted empty line inside a field",
        b'id,v\n1,"a\n\nb"\n2,b\n',
        rows=[(1, "a\n\nb"), (2, "b")],
    ),
    Case("latin-1 byte", b"id,v\n1,caf\xe9\n", error=SourceFileError, says="not UTF-8"),
    Case(
        "lossy latin-1",
        b"id,v\n1,caf\xe9\n",
        extra="csv: {encoding: utf8-lossy}",
        rows=[(1, "caf\ufffd")],
    ),
    Case("header only", b"id,v\n", rows=[]),
    Case("empty file", b"", error=SourceFileError, says="empty"),
    Case("duplicate header", b"id,id\n1,2\n", error=IngestError, says="twice"),
    Case("empty header name", b"id,\n1,2\n", error=IngestError, says="empty"),
    Case("tab separated under commas", b"id\tv\n1\ta\n2\tb\n", error=IngestError, says="separator"),
    Case(
        "semicolon separated under commas", b"id;v\n1;a\n2;b\n", error=IngestError, says="separator"
    ),
    Case("tab separator set", b"id\tv\n1\ta\n2\tb\n", extra='csv: {separator: "\\t"}', rows=OK2),
    Case(
        "null values",
        b"id,v\n1,NA\n2,b\n",
        extra="csv: {null_values: [NA]}",
        rows=[(1, None), (2, "b")],
    ),
    Case(
        "nul byte in text",
        b"id,v\n1,a\x00b\n",
        error=BadRowsOverLimit,
        says="line 2, column 'v': nul_byte",
    ),
    Case(
        "nul byte quarantined",
        b"id,v\n1,a\n3,x\x00y\n2,b\n",
        extra="validation_data: {max_bad_rows: 1}",
        rows=OK2,
    ),
    Case(
        "short row quarantined",
        b"id,v\n1,a\n3\n2,b\n",
        extra=RAGGED_ROOM,
        rows=OK2,
    ),
    Case(
        "long row quarantined",
        b"id,v\n1,a\n3,c,d\n2,b\n",
        extra=RAGGED_ROOM,
        rows=OK2,
    ),
    Case(
        "ragged rows over the limit",
        b"id,v\n1,a\n3\n2,b\n",
        extra="csv: {ragged_rows: quarantine}",
        error=BadRowsOverLimit,
        says="line 3: ragged_row: 1 fields where the header has 2",
    ),
    Case("gzip given as csv", gzip.compress(b"id,v\n1,a\n"), error=SourceFileError, says="gzip"),
    Case(
        "zstd given as csv", b"\x28\xb5\x2f\xfd" + b"\x00" * 20, error=SourceFileError, says="zstd"
    ),
    Case(
        "parquet named csv",
        _parquet(pa.table({"id": [1, 2], "v": ["a", "b"]})),
        error=SourceFileError,
        says="PAR1",
    ),
    Case(
        "1700 columns",
        (
            ",".join(f"c{i}" for i in range(1700))
            + "\n"
            + ",".join("1" for _ in range(1700))
            + "\n"
        ).encode(),
        error=IngestError,
        says="1,600",
    ),
    Case("name too long", b"id," + b"v" * 70 + b"\n1,2\n", error=IngestError, says="63"),
    Case(
        "header doubled quote",
        b'id,"v""x"\n1,a\n',
        rows=[(1, "a")],
        column='v"x',
    ),
]

VALUES = [
    Case(
        "text keeps leading zeros",
        b"id,v\n1,00501\n2,02134\n",
        extra="schema_config: {data_type: {v: string}}",
        rows=[(1, "00501"), (2, "02134")],
    ),
    Case(
        "text keeps number spelling",
        b"id,v\n1,1.50\n2,1e3\n3,007.0\n",
        extra="schema_config: {data_type: {v: string}}",
        rows=[(1, "1.50"), (2, "1e3"), (3, "007.0")],
    ),
    Case(
        "guess keeps leading zeros", b"id,v\n1,00501\n2,12345\n", rows=[(1, "00501"), (2, "12345")]
    ),
    Case(
        "fraction into int64",
        b"id,v\n1,1.5\n",
        extra="schema_config: {data_type: {v: int64}}",
        error=BadRowsOverLimit,
        says="line 2",
    ),
    Case(
        "whole float text into int64",
        b"id,v\n1,2.0\n",
        extra="schema_config: {data_type: {v: int64}}",
        error=BadRowsOverLimit,
        says="line 2",
    ),
    Case(
        "int64 overflow",
        b"id,v\n1,9223372036854775808\n",
        extra="schema_config: {data_type: {v: int64}}",
        error=BadRowsOverLimit,
        says="line 2",
    ),
    Case(
        "int16 overflow",
        b"id,v\n1,40000\n",
        extra="schema_config: {data_type: {v: int16}}",
        error=BadRowsOverLimit,
        says="line 2",
    ),
    Case(
        "word into int",
        b"id,v\n1,forty\n",
        extra="schema_config: {data_type: {v: int64}}",
        error=BadRowsOverLimit,
        says="'forty'",
    ),
    Case(
        "decimal exact",
        b"id,v\n1,12345678901234567.9\n",
        extra="schema_config: {data_type: {v: 'decimal(18,1)'}}",
        select="select id, {col}::text from {} order by id",
        rows=[(1, "12345678901234567.9")],
    ),
    Case(
        "decimal too wide",
        b"id,v\n1,123456.1\n",
        extra="schema_config: {data_type: {v: 'decimal(5,2)'}}",
        error=BadRowsOverLimit,
        says="line 2",
    ),
    Case(
        "wide integer guessed",
        b"id,v\n1,99999999999999999999\n",
        select="select id, {col}::text from {} order by id",
        rows=[(1, "99999999999999999999")],
    ),
    Case(
        "bad date",
        b"id,v\n1,2024-02-30\n",
        extra="schema_config: {data_type: {v: date}}",
        error=BadRowsOverLimit,
        says="line 2",
    ),
    Case(
        "date out of range words",
        b"id,v\n1,yesterday\n",
        extra="schema_config: {data_type: {v: date}}",
        error=BadRowsOverLimit,
        says="yesterday",
    ),
    Case(
        "bool words",
        b"id,v\n1,true\n2,FALSE\n",
        extra="schema_config: {data_type: {v: bool}}",
        rows=[(1, True), (2, False)],
    ),
    Case(
        "bool junk",
        b"id,v\n1,maybe\n",
        extra="schema_config: {data_type: {v: bool}}",
        error=BadRowsOverLimit,
        says="maybe",
    ),
    Case(
        "nan and inf",
        b"id,v\n1,NaN\n2,inf\n",
        extra="schema_config: {data_type: {v: float64}}",
        select="select id, {col}::text from {} order by id",
        rows=[(1, "NaN"), (2, "Infinity")],
    ),
    Case(
        "unicode text",
        "id,v\n1,日本語 ✓\n2,emoji 🎉\n".encode(),
        rows=[(1, "日本語 ✓"), (2, "emoji 🎉")],
    ),
    Case("sql in values", b"id,v\n1,'); drop table x; --\n", rows=[(1, "'); drop table x; --")]),
    Case(
        "sql in a column name",
        b'id,"v; drop table x"\n1,a\n',
        rows=[(1, "a")],
        column="v; drop table x",
    ),
    Case(
        "quote in a column name",
        b'id,"v""q"\n1,a\n',
        rows=[(1, "a")],
        column='v"q',
    ),
    Case(
        "internal-looking column name",
        b"id,__row\n1,a\n",
        rows=[(1, "a")],
        column="__row",
    ),
    Case(
        "check ge",
        b"id,v\n1,-3\n",
        extra="validation_data: {checks: {v: {ge: 0}}}",
        error=BadRowsOverLimit,
        says="-3 < 0",
    ),
    Case(
        "check isin",
        b"id,v\n1,zz\n",
        extra="validation_data: {checks: {v: {isin: [a, b]}}}",
        error=BadRowsOverLimit,
        says="zz",
    ),
    Case(
        "check not null",
        b"id,v\n1,\n",
        extra="validation_data: {checks: {v: {nullable: false}}}",
        error=BadRowsOverLimit,
        says="null",
    ),
    Case(
        "check unique",
        b"id,v\n1,a\n2,a\n",
        extra="validation_data: {checks: {v: {unique: true}}}",
        error=BadRowsOverLimit,
        says="repeats",
    ),
    Case(
        "bad rows tolerated",
        b"id,v\n1,a\n2,zz\n",
        extra="validation_data: {max_bad_rows: 1, checks: {v: {isin: [a]}}}",
        rows=[(1, "a")],
    ),
    Case(
        "bad fraction",
        b"id,v\n1,a\n2,zz\n",
        extra="validation_data: {max_bad_fraction: 0.1, checks: {v: {isin: [a]}}}",
        error=BadRowsOverLimit,
        says="max_bad_fraction",
    ),
]

NAMES = [
    Case(
        f"column named {name}",
        f'id,"{name}"\n1,a\n'.encode(),
        rows=[(1, "a")],
        column=name,
    )
    for name in [
        "select",
        "user",
        "from",
        "Mixed Case",
        "with space",
        "dot.ted",
        "naïve",
        "日本",
        "emoji🎉",
        "semi;colon",
        "back\\slash",
        "dollar$",
        "per%cent",
        "brace{x}",
        "tab\tname",
    ]
]

TYPES = [
    Case(
        f"{kind} {label}",
        f"id,v\n1,{value}\n".encode(),
        extra=f"schema_config: {{data_type: {{v: '{kind}'}}}}",
        select="select id, {col}::text from {} order by id",
        rows=[(1, text)],
    )
    for kind, label, value, text in [
        ("int8", "max", "127", "127"),
        ("int32", "min", "-2147483648", "-2147483648"),
        ("int64", "max", "9223372036854775807", "9223372036854775807"),
        ("float32", "value", "1.5", "1.5"),
        ("float64", "exponent", "1e300", "1e+300"),
        (
            "decimal(38,10)",
            "wide",
            "1234567890123456789012345678.1234567890",
            "1234567890123456789012345678.1234567890",
        ),
        ("decimal(10,2)", "negative", "-0.05", "-0.05"),
        ("date", "iso", "2024-02-29", "2024-02-29"),
        ("datetime", "iso", "2024-02-29 13:45:00", "2024-02-29 13:45:00"),
        ("time", "iso", "13:45:00", "13:45:00"),
        ("string", "spaces kept", "' padded '", "' padded '"),
    ]
] + [
    Case(
        f"{kind} refuses {value}",
        f"id,v\n1,{value}\n".encode(),
        extra=f"schema_config: {{data_type: {{v: '{kind}'}}}}",
        error=BadRowsOverLimit,
        says="line 2",
    )
    for kind, value in [
        ("int8", "128"),
        ("int32", "2147483648"),
        ("int64", "1e3"),
        ("int64", "0x10"),
        ("date", "2024-13-01"),
        ("time", "25:00:00"),
        ("datetime", "not-a-time"),
        ("decimal(4,2)", "100.5"),
    ]
]

CHECKS = [
    Case(
        f"check {rule}",
        b"id,v\n1,5\n",
        extra=f"validation_data: {{checks: {{v: {{{rule}}}}}}}",
        error=BadRowsOverLimit,
        says=says,
    )
    for rule, says in [
        ("le: 4", "5 > 4"),
        ("lt: 5", "5 >= 5"),
        ("gt: 5", "5 <= 5"),
        ("notin: [5]", "is one of"),
    ]
] + [
    Case(
        "check str_length",
        b"id,v\n1,toolong\n",
        extra="validation_data: {checks: {v: {str_length: [1, 3]}}}",
        error=BadRowsOverLimit,
        says="length",
    ),
    Case(
        "check str_matches",
        b"id,v\n1,nope\n",
        extra="validation_data: {sample_size: 1.0, checks: {v: {str_matches: '^[0-9]+$'}}}",
        error=BadRowsOverLimit,
        says="does not match",
    ),
    Case(
        "checks pass",
        b"id,v\n1,5\n2,6\n",
        extra="validation_data: {checks: {v: {ge: 0, le: 10, unique: true, nullable: false}}}",
        select="select id, {col}::text from {} order by id",
        rows=[(1, "5"), (2, "6")],
    ),
]

CONFIGS = [
    Case(
        "unknown key",
        b"id,v\n1,a\n",
        extra="schema_config: {data_typo: {}}",
        error=ConfigError,
        says="data_typo",
    ),
    Case(
        "unknown type",
        b"id,v\n1,a\n",
        extra="schema_config: {data_type: {v: int99}}",
        error=ConfigError,
        says="int99",
    ),
    Case(
        "type for a missing column",
        b"id,v\n1,a\n",
        extra="schema_config: {data_type: {w: int64}}",
        error=ConfigError,
        says="'w'",
    ),
    Case(
        "check on a missing column",
        b"id,v\n1,a\n",
        extra="validation_data: {checks: {w: {ge: 0}}}",
        error=ConfigError,
        says="'w'",
    ),
    Case(
        "invalid regex",
        b"id,v\n1,a\n",
        extra="validation_data: {checks: {v: {str_matches: '('}}}",
        error=ConfigError,
        says="str_matches",
    ),
    Case(
        "invalid time zone",
        b"id,v\n1,2024-01-01 00:00:00\n",
        extra="schema_config: {data_type: {v: 'datetime[Mars/Base]'}}",
        error=ConfigError,
        says="Mars/Base",
    ),
    Case(
        "bad decimal precision",
        b"id,v\n1,1\n",
        extra="schema_config: {data_type: {v: 'decimal(50,2)'}}",
        error=ConfigError,
        says="precision",
    ),
    Case(
        "negative sample",
        b"id,v\n1,a\n",
        extra="validation_data: {sample_size: -1}",
        error=ConfigError,
        says="sample_size",
    ),
    Case(
        "bad separator",
        b"id,v\n1,a\n",
        extra="csv: {separator: ';;'}",
        error=ConfigError,
        says="separator",
    ),
    Case(
        "bad ragged_rows",
        b"id,v\n1,a\n",
        extra="csv: {ragged_rows: sometimes}",
        error=ConfigError,
        says="ragged_rows",
    ),
    Case(
        "bad strategy",
        b"id,v\n1,a\n",
        extra="strategy: sideways",
        error=ConfigError,
        says="strategy",
    ),
]

PARQUET = [
    Case(
        "parquet date past postgresql quarantined",
        _parquet(pa.table({"id": [1, 2], "v": pa.array([19_000, 2_145_042_906], pa.date32())})),
        suffix=".parquet",
        extra="validation_data: {max_bad_rows: 1}",
        select="select id, {col}::text from {} order by id",
        rows=[(1, "2022-01-08")],
    ),
    Case(
        "parquet timestamp before 4714 BC",
        _parquet(pa.table({"id": [1], "v": pa.array([-(10**17) * 3], pa.timestamp("us"))})),
        suffix=".parquet",
        error=BadRowsOverLimit,
        says="row 0, column 'v': out_of_range",
    ),
    Case(
        "parquet nul byte in a dictionary",
        _parquet(pa.table({"id": [1, 2], "v": pa.array(["a\x00", "b"]).dictionary_encode()})),
        suffix=".parquet",
        error=BadRowsOverLimit,
        says="row 0, column 'v': nul_byte",
    ),
    Case(
        "parquet plain",
        _parquet(pa.table({"id": [1, 2], "v": ["a", "b"]})),
        suffix=".parquet",
        rows=OK2,
    ),
    Case(
        "parquet dictionary with nulls",
        _parquet(pa.table({"id": [1, 2, 3], "v": pa.array(["a", None, "a"]).dictionary_encode()})),
        suffix=".parquet",
        rows=[(1, "a"), (2, None), (3, "a")],
    ),
    Case(
        "parquet float16",
        _parquet(pa.table({"id": [1], "v": pa.array([1.5], pa.float16())})),
        suffix=".parquet",
        rows=[(1, 1.5)],
    ),
    Case(
        "parquet fixed offset timestamp",
        _parquet(pa.table({"id": [1], "v": pa.array([0], pa.timestamp("us", "+02:00"))})),
        suffix=".parquet",
        select="select id, extract(epoch from {col})::int from {} order by id",
        rows=[(1, 0)],
    ),
    Case(
        "parquet decimal256",
        _parquet(pa.table({"id": [1], "v": pa.array([1], pa.decimal256(20, 2))})),
        suffix=".parquet",
        select="select id, {col}::text from {} order by id",
        rows=[(1, "1.00")],
    ),
    Case(
        "parquet float into int64",
        _parquet(pa.table({"id": [1, 2], "v": [2.0, 1.5]})),
        suffix=".parquet",
        extra="schema_config: {data_type: {v: int64}}",
        error=BadRowsOverLimit,
        says="row 1",
    ),
    Case(
        "parquet column named __row",
        _parquet(pa.table({"id": [1], "__row": ["a"]})),
        suffix=".parquet",
        column="__row",
        rows=[(1, "a")],
    ),
    Case(
        "parquet truncated",
        _parquet(pa.table({"id": [1, 2], "v": ["a", "b"]}))[:-20],
        suffix=".parquet",
        error=SourceFileError,
        says="Parquet",
    ),
    Case(
        "parquet garbage",
        b"PAR1" + b"\x00" * 64 + b"PAR1",
        suffix=".parquet",
        error=SourceFileError,
        says="Parquet",
    ),
    Case(
        "csv named parquet", b"id,v\n1,a\n", suffix=".parquet", error=SourceFileError, says="PAR1"
    ),
]

CASES = CSV_STRUCTURE + VALUES + NAMES + TYPES + CHECKS + CONFIGS + PARQUET


def _config(tmp_path: Path, data: Path, schema: str, url: str, extra: str) -> Path:
    """The battery's config: drift only warns, so each case meets the earlier table's schema."""
    return write_config(
        tmp_path, data, schema, url, "hostile", table="t", extra=f"on_drift: warn\n{extra}"
    )


def _table(conn: Conn, schema: str) -> list[tuple[object, ...]]:
    return conn.execute(
        sql.SQL("select id, v from {} order by id").format(sql.Identifier(schema, "t"))
    ).fetchall()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(
    case: Case, tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn
) -> None:
    """The input loads exactly, or fails with one clear error and the table as it was."""
    before = tmp_path / "before.csv"
    before.write_text("id,v\n100,kept\n")
    run_source(load_config(_config(tmp_path, before, pg_schema, database_url, "")), progress=False)
    data = tmp_path / f"hostile{case.suffix}"
    data.write_bytes(case.data)
    if case.error is None:
        run_source(
            load_config(_config(tmp_path, data, pg_schema, database_url, case.extra)),
            progress=False,
        )
        query = sql.SQL(case.select).format(
            sql.Identifier(pg_schema, "t"), col=sql.Identifier(case.column)
        )
        assert pg_conn.execute(query).fetchall() == case.rows
        return
    with pytest.raises(case.error) as info:
        run_source(
            load_config(_config(tmp_path, data, pg_schema, database_url, case.extra)),
            progress=False,
        )
    message = str(info.value)
    assert case.says in message
    assert "Traceback" not in message
    named = data.name in message or "hostile.yml" in message
    assert named, f"the error names neither the file nor the config: {message}"
    assert _table(pg_conn, pg_schema) == [(100, "kept")]


def test_the_battery_is_large() -> None:
    """The battery keeps its size: cases are added, not lost."""
    assert len(CASES) >= 120
    assert len({c.name for c in CASES}) == len(CASES)
