"""Bad input files and configs end in one clear error naming the file and the fix."""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import json
import lzma
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import sql

from ingest import load_config, run_source
from ingest.config import CsvOptions
from ingest.errors import (
    BadColumnName,
    ConfigError,
    DamagedParquet,
    IngestError,
    SchemaDrift,
    SchemaMismatch,
    SeparatorMismatch,
    SourceFileError,
    TooManyColumns,
    UnsupportedColumnType,
)
from ingest.pg.target import check_column_names, check_column_types
from ingest.stages.plan import Plan
from ingest.stages.profile import detect_format, profile_file
from ingest.stages.read import batches
from tests.stages.partitions import whole_file

Conn = psycopg.Connection[tuple[object, ...]]
ROOT = Path(__file__).resolve().parent.parent
FRAME = pl.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})


def _csv_bytes() -> bytes:
    return FRAME.write_csv().encode()


def _parquet_bytes(tmp_path: Path) -> bytes:
    scratch = tmp_path / "scratch.parquet"
    FRAME.write_parquet(scratch)
    data = scratch.read_bytes()
    scratch.unlink()
    return data


def _arrow_bytes(tmp_path: Path) -> bytes:
    scratch = tmp_path / "scratch.arrow"
    FRAME.write_ipc(scratch)
    data = scratch.read_bytes()
    scratch.unlink()
    return data


_ZSTD_FRAME = bytes.fromhex("28b52ffd2000090000") + b"a,b\n"  # only the magic matters


@pytest.mark.parametrize(
    ("name", "declared", "content", "reason", "fix"),
    [
        ("data.csv", "auto", "parquet", "it is a Parquet file", "format: parquet"),
        ("data.csv", "csv", "parquet", "format: csv says CSV", "format: parquet"),
        ("data", "auto", "parquet", None, None),
        ("data.parquet", "auto", "csv", "does not start with Parquet's magic", "format: csv"),
        ("data.csv", "auto", "gzip", "no .gz suffix", "compression: gzip"),
        ("data.csv.gz", "csv", "gzip", None, None),
        ("data.csv", "auto", "zstd", "no .zst suffix", "rename it to data.csv.zst"),
        ("data.csv.gz", "auto", "csv", "ends in .gz (gzip), but it is not compressed", "rename"),
        ("data.csv.zst", "auto", "gzip", "but it is gzip-compressed", "compression: gzip"),
        ("data.parquet", "auto", "zip", "zip-compressed", "unzip data.parquet"),
        ("data.csv.bz2", "auto", "bzip2", "read when it is gzip or zstd", "bunzip2 -k"),
        ("data.csv.xz", "auto", "xz", "read when it is gzip or zstd", "xz -dk data.csv.xz"),
        ("data.parquet.gz", "auto", "gzparquet", "Parquet file inside gzip", "gunzip -k"),
        ("data.jsonl", "auto", "csv", "so it reads as CSV, but its name", "format: csv"),
        ("data.csv", "auto", "jsonl", "a JSON object, so it reads as JSON lines", "format: jsonl"),
        ("data.csv", "auto", "arrow", "it is an Arrow IPC file", "format: arrow"),
        ("data.arrow", "auto", "csv", "not an Arrow IPC file", "format: csv"),
        ("data.jsonl", "arrow", "jsonl", "format: arrow says Arrow", "format: jsonl"),
        ("data", "auto", "jsonl", None, None),
        ("data", "auto", "arrow", None, None),
    ],
)
def test_format_comes_from_the_content(
    tmp_path: Path, name: str, declared: str, content: str, reason: str | None, fix: str | None
) -> None:
    """The first bytes decide the format; a name or config that contradicts them is refused."""
    path = tmp_path / name
    data = {
        "parquet": lambda: _parquet_bytes(tmp_path),
        "csv": _csv_bytes,
        "gzip": lambda: gzip.compress(_csv_bytes()),
        "zstd": lambda: _ZSTD_FRAME,
        "zip": lambda: b"PK\x03\x04" + bytes(40),
        "bzip2": lambda: bz2.compress(_csv_bytes()),
        "xz": lambda: lzma.compress(_csv_bytes()),
        "gzparquet": lambda: gzip.compress(_parquet_bytes(tmp_path)),
        "jsonl": lambda: FRAME.write_ndjson().encode(),
        "arrow": lambda: _arrow_bytes(tmp_path),
    }[content]()
    path.write_bytes(data)
    if reason is None:
        assert detect_format(path, declared) == ("csv" if content == "gzip" else content)
        return
    with pytest.raises(SourceFileError) as info:
        detect_format(path, declared)
    message = str(info.value)
    assert str(path) in message
    assert reason in message
    assert fix is not None and fix in info.value.fix


def test_text_named_csv_is_still_csv(tmp_path: Path) -> None:
    """A plain CSV file is detected as CSV and profiles as before."""
    path = tmp_path / "plain.csv"
    path.write_bytes(_csv_bytes())
    assert profile_file(path, detect_format(path, "auto"), 100, CsvOptions()).rows == 3


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`invoke ingest ARGS` in a subprocess, from the repo root, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", "ingest", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ},
        check=False,
    )


def source_config(
    tmp_path: Path,
    data: Path | str,
    extra: str = "",
    *,
    schema: str | None = None,
    url: str | None = None,
    **fields: str,
) -> Path:
    """A one-source config loading `data` into table `t`; `schema` and `url` name the database."""
    values = {"table_name": "t", "if_table_exists": "replace", **fields}
    lines = "".join(f"    {key}: '{value}'\n" for key, value in values.items())
    more = "".join(f"    {line}\n" for line in extra.splitlines() if line.strip())
    database = ""
    if schema is not None:
        database = f"database: {{schema: {schema}, metadata_schema: {schema}, url: '{url}'}}\n"
    path = tmp_path / "config.yml"
    path.write_text(f"{database}sources:\n  s:\n    input_path: '{data}'\n{lines}{more}")
    return path


def assert_one_clear_error(
    done: subprocess.CompletedProcess[str], *fragments: str, code: int = 1
) -> None:
    """Exit `code`, no traceback, one `error:` line, and the message has every fragment."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == code, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("p.csv", "parquet", "it is a Parquet file"),
        ("g.csv", "gzip", "compression: gzip"),
    ],
)
def test_cli_refuses_a_file_in_another_format(
    tmp_path: Path, name: str, content: str, fragment: str
) -> None:
    """`invoke ingest` on a Parquet or gzip file named .csv says so in one line, exit 1."""
    path = tmp_path / name
    path.write_bytes(_parquet_bytes(tmp_path) if content == "parquet" else gzip.compress(b"a\n1\n"))
    done = cli("--config", str(source_config(tmp_path, path)))
    assert_one_clear_error(done, str(path), fragment)


@pytest.mark.parametrize(("separator", "setting"), [("\t", '"\\t"'), (";", '";"'), ("|", '"|"')])
def test_another_separator_is_refused_with_the_setting(
    tmp_path: Path, separator: str, setting: str
) -> None:
    """A file separated by tabs, `;` or `|` read with the default `,` names the setting to use."""
    path = tmp_path / "data.csv"
    path.write_text("\n".join(separator.join(row) for row in [["a", "b", "c"], ["1", "2", "3"]]))
    with pytest.raises(SeparatorMismatch) as info:
        profile_file(path, "csv", 100, CsvOptions())
    assert str(path) in str(info.value)
    assert info.value.found == separator
    assert f"csv.separator: {setting}" in info.value.fix


def test_the_suggested_separator_reads_the_file(tmp_path: Path) -> None:
    """With the setting the error suggests (as YAML reads it), the file profiles into 3 columns."""
    path = tmp_path / "data.csv"
    path.write_text("a\tb\tc\n1\t2\t3\n4\t5\t6\n")
    with pytest.raises(SeparatorMismatch) as info:
        profile_file(path, "csv", 100, CsvOptions())
    value = info.value.fix.split("csv.separator: ")[1].split(" in the source")[0]
    cfg = source_config(tmp_path, path, f"csv: {{separator: {value}}}")
    csv = load_config(cfg).source().csv
    assert profile_file(path, "csv", 100, csv).schema == {
        "a": pl.Int64(),
        "b": pl.Int64(),
        "c": pl.Int64(),
    }


@pytest.mark.parametrize(
    ("text", "extra", "columns"),
    [
        ("a\tb\n1\t2\n", "csv: {separator: ','}", 1),  # set explicitly: trusted as it is
        ("a;b,c\n1;2,3\n", "", 2),  # the header has the separator
        ("note\nx;y\nz\n", "", 1),  # one column, a `;` in one value only
    ],
)
def test_separator_is_kept_when_the_file_does_not_contradict_it(
    tmp_path: Path, text: str, extra: str, columns: int
) -> None:
    """An explicit separator, or a file whose first lines fit it, is read as configured."""
    path = tmp_path / "data.csv"
    path.write_text(text)
    csv = load_config(source_config(tmp_path, path, extra)).source().csv
    assert len(profile_file(path, "csv", 100, csv).columns) == columns


def test_cli_refuses_a_tab_separated_file_read_with_commas(tmp_path: Path) -> None:
    """A tab-separated file read with the default separator exits 1, naming the fix."""
    path = tmp_path / "tabs.csv"
    path.write_text("a\tb\tc\n1\t2\t3\n")
    done = cli("--config", str(source_config(tmp_path, path)))
    assert_one_clear_error(done, str(path), 'set csv.separator: "\\t"')


@pytest.mark.parametrize(("columns", "refused"), [(1598, False), (1599, True), (1700, True)])
def test_columns_over_postgresql_limit_are_refused(
    tmp_path: Path, columns: int, refused: bool
) -> None:
    """A file's columns plus the two lineage columns may not pass PostgreSQL's 1,600."""
    names = [f"c{i}" for i in range(columns)]
    if not refused:
        check_column_names(tmp_path / "wide.csv", names, ["_loaded_at", "_run_id"])
        return
    with pytest.raises(TooManyColumns) as info:
        check_column_names(tmp_path / "wide.csv", names, ["_loaded_at", "_run_id"])
    assert f"{columns:,} columns" in str(info.value)
    assert "limit of 1,600" in str(info.value)
    assert "at most 1,598" in str(info.value)


def test_cli_refuses_a_1700_column_header(tmp_path: Path) -> None:
    """A CSV with 1,700 columns is refused before any table is made, naming count and limit."""
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"c{i}" for i in range(1700)) + "\n" + ",".join(["1"] * 1700) + "\n")
    done = cli("--config", str(source_config(tmp_path, path)))
    assert_one_clear_error(done, str(path), "1,700 columns", "limit of 1,600")


def test_duplicate_parquet_field_names_are_refused(tmp_path: Path) -> None:
    """A Parquet schema naming a field twice is refused naming the file, the column and the fix."""
    path = tmp_path / "dup.parquet"
    pq.write_table(pa.table([pa.array([1, 2]), pa.array([3, 4])], names=["x", "x"]), path)
    with pytest.raises(BadColumnName) as info:
        profile_file(path, "parquet", 100, CsvOptions())
    assert info.value.column == "x"
    assert str(path) in str(info.value) and "rename the column in the file" in str(info.value)
    done = cli("--config", str(source_config(tmp_path, path)))
    assert_one_clear_error(done, str(path), "'x' appears twice")


def rows(conn: Conn, schema: str, table: str, columns: str) -> list[tuple[object, ...]]:
    """The table's `columns` (comma-separated), ordered by them."""
    names = [sql.Identifier(c.strip()) for c in columns.split(",")]
    query = sql.SQL("select {c} from {t} order by {c}").format(
        c=sql.SQL(", ").join(names), t=sql.Identifier(schema, table)
    )
    return conn.execute(query).fetchall()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_column_named_like_an_internal_one_loads(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn, fmt: str
) -> None:
    """A user column named `__row` loads with its own values, bad rows counted on file rows."""
    frame = pl.DataFrame({"__row": [10, 20, 30], "v": [1, -1, 3]})
    path = tmp_path / f"data.{fmt}"
    frame.write_csv(path) if fmt == "csv" else frame.write_parquet(path)
    checks = "validation_data: {max_bad_rows: 1, checks: {v: {ge: 0}}}"
    config = load_config(source_config(tmp_path, path, checks, schema=pg_schema, url=database_url))
    report = run_source(config, progress=False)
    assert (report.rows_loaded, report.rows_rejected) == (2, 1)
    assert rows(pg_conn, pg_schema, "t", "__row, v") == [(10, 1), (30, 3)]
    rejected = rows(pg_conn, pg_schema, "t__rejected", "row_number")
    assert rejected == [(3 if fmt == "csv" else 1,)]  # CSV line 3, Parquet row 1 (0-based)


@pytest.mark.parametrize(
    ("extra", "key", "reason"),
    [
        (
            "validation_data: {checks: {b: {str_matches: '('}}}",
            "sources.s.validation_data.checks.b.str_matches",
            "'(' is not a valid regular expression",
        ),
        (
            "validation_data: {checks: {b: {str_matches: '(?<=a)b'}}}",
            "sources.s.validation_data.checks.b.str_matches",
            "look-around",
        ),
        (
            "schema_config: {data_type: {b: 'datetime[Mars/Base]'}}",
            "sources.s.schema_config.data_type",
            "unknown time zone 'Mars/Base'",
        ),
    ],
)
def test_bad_regex_or_time_zone_fails_at_config_load(
    tmp_path: Path, extra: str, key: str, reason: str
) -> None:
    """An invalid regex or time zone is one ConfigError problem naming the file and the key."""
    cfg = source_config(tmp_path, tmp_path / "data.csv", extra)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert info.value.path == cfg
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(f"{key}: ")
    assert reason in info.value.problems[0]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "+02:00"])
def test_real_time_zones_are_accepted(tmp_path: Path, zone: str) -> None:
    """Time zone names and fixed offsets polars knows pass the config check."""
    extra = f"schema_config: {{data_type: {{b: 'datetime[{zone}]'}}}}"
    cfg = source_config(tmp_path, "x.csv", extra)
    assert load_config(cfg).source().schema_config.data_type == {"b": f"datetime[{zone}]"}


def test_cli_bad_regex_is_one_clear_error(tmp_path: Path) -> None:
    """`invoke ingest` with an invalid regex exits 2 (a config error) naming the file and key."""
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,x\n")
    cfg = source_config(tmp_path, path, "validation_data: {checks: {b: {str_matches: '('}}}")
    done = cli("--config", str(cfg))
    assert_one_clear_error(done, str(cfg), "checks.b.str_matches", code=2)


def test_cli_json_prints_one_failure_object(tmp_path: Path) -> None:
    """`invoke ingest --json` that fails prints one JSON object with the error, and exits 1."""
    path = tmp_path / "g.csv"
    path.write_bytes(gzip.compress(b"a\n1\n"))
    done = cli("--config", str(source_config(tmp_path, path)), "--json")
    assert_one_clear_error(done, "no .gz suffix")
    assert len(done.stdout.strip().splitlines()) == 1, done.stdout
    report = json.loads(done.stdout)
    assert report["status"] == "failed"
    assert report["error_type"] == "SourceFileError"
    assert str(path) in report["error"] and "rename it to g.csv.gz" in report["error"]


_UTC = dt.UTC


@pytest.mark.parametrize(
    ("arrow", "pg", "expected"),
    [
        (pa.array([1.5, None], pa.float16()), "real", [(1.5,), (None,)]),
        (
            pa.array([Decimal("123456789012345678.25"), Decimal("-1.5")], pa.decimal256(20, 2)),
            "numeric",
            [(Decimal("-1.50"),), (Decimal("123456789012345678.25"),)],
        ),
        (
            pa.array([dt.datetime(2024, 1, 1, 12, tzinfo=_UTC)], pa.timestamp("us", "+02:00")),
            "timestamp with time zone",
            [(dt.datetime(2024, 1, 1, 12, tzinfo=_UTC),)],
        ),
        (
            pa.array([[("k", 1), ("j", 2)], None], pa.map_(pa.string(), pa.int64())),
            "jsonb",
            [({"j": 2, "k": 1},), (None,)],
        ),
        (
            pa.array([[(7, "a")], []], pa.map_(pa.int64(), pa.string())),
            "jsonb",
            [([],), ([{"key": 7, "value": "a"}],)],
        ),
    ],
    ids=["float16", "decimal256", "fixed-offset", "map-text-keys", "map-int-keys"],
)
def test_parquet_types_load_as_their_postgresql_type(
    tmp_path: Path,
    database_url: str,
    pg_schema: str,
    pg_conn: Conn,
    arrow: pa.Array,
    pg: str,
    expected: list[tuple[object, ...]],
) -> None:
    """float16, decimal256, +02:00 timestamps and maps load as real, numeric, timestamptz, jsonb."""
    path = tmp_path / "typed.parquet"
    pq.write_table(pa.table({"x": arrow}), path)
    config = load_config(source_config(tmp_path, path, schema=pg_schema, url=database_url))
    assert run_source(config, progress=False).rows_loaded == len(arrow)
    kind = pg_conn.execute(
        "select data_type from information_schema.columns"
        " where table_schema = %s and table_name = 't' and column_name = 'x'",
        (pg_schema,),
    ).fetchone()
    assert kind == (pg,)
    assert rows(pg_conn, pg_schema, "t", "x") == expected


def test_a_decimal_wider_than_polars_is_refused(tmp_path: Path) -> None:
    """A decimal256 of 50 digits is refused naming the file, the column, its type and the fix."""
    path = tmp_path / "wide.parquet"
    values = pa.array([Decimal("1" * 48 + ".25")], pa.decimal256(50, 2))
    pq.write_table(pa.table({"d": values}), path)
    with pytest.raises(UnsupportedColumnType) as info:
        profile_file(path, "parquet", 100, CsvOptions())
    assert (info.value.column, info.value.type_name) == ("d", "decimal256(50, 2)")
    assert str(path) in str(info.value) and "decimal(38, 2)" in info.value.fix
    done = cli("--config", str(source_config(tmp_path, path)))
    assert_one_clear_error(done, str(path), "'d' has type decimal256(50, 2)")


def test_a_type_without_an_encoding_is_refused_before_loading(tmp_path: Path) -> None:
    """A column type the encoder lacks is refused naming the column, its type and the fix."""
    with pytest.raises(UnsupportedColumnType) as info:
        check_column_types(tmp_path / "f.parquet", {"ok": pl.Int64(), "big": pl.Int128()})
    assert info.value.column == "big"
    assert "data_type: {'big': string}" in str(info.value)


def corrupt_copy(good: Path, bad: Path) -> None:
    """`bad`: `good` with 64 bytes in the middle inverted (inside a compressed data page)."""
    data = bytearray(good.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    bad.write_bytes(bytes(data))


def four_row_groups(path: Path) -> pl.DataFrame:
    """200,000 rows in 4 zstd row groups."""
    frame = pl.DataFrame({"i": range(200_000), "s": [f"value {i}" for i in range(200_000)]})
    frame.write_parquet(path, compression="zstd", row_group_size=50_000)
    return frame


def test_a_damaged_row_group_is_named_by_the_reader(tmp_path: Path) -> None:
    """Reading a Parquet file with a corrupt page raises DamagedParquet naming file and group."""
    four_row_groups(tmp_path / "good.parquet")
    corrupt_copy(tmp_path / "good.parquet", tmp_path / "bad.parquet")
    plan = Plan("lazy", 0, 0, 0.0, 10_000, 0, 1, False, "test")
    schema = dict(pl.read_parquet_schema(tmp_path / "bad.parquet"))
    with pytest.raises(DamagedParquet) as info:
        part = whole_file(tmp_path / "bad.parquet", "parquet", True)
        for _ in batches(part, CsvOptions(), schema, plan):
            pass
    assert info.value.row_group == 1
    assert str(tmp_path / "bad.parquet") in str(info.value) and "row group 1 (of 4" in str(
        info.value
    )


def test_a_damaged_parquet_file_leaves_the_table_as_it_was(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """A replace from a corrupt Parquet file fails naming file and row group; the table stays."""
    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    four_row_groups(good)
    corrupt_copy(good, bad)
    run_source(load_config(source_config(tmp_path, good, schema=pg_schema, url=database_url)))
    with pytest.raises(DamagedParquet) as info:
        run_source(load_config(source_config(tmp_path, bad, schema=pg_schema, url=database_url)))
    assert str(bad) in str(info.value) and "row group 1" in str(info.value)
    count = pg_conn.execute(
        sql.SQL("select count(*), sum(i) from {}").format(sql.Identifier(pg_schema, "t"))
    ).fetchone()
    assert count == (200_000, sum(range(200_000)))
    done = cli("--config", str(source_config(tmp_path, bad, schema=pg_schema, url=database_url)))
    assert_one_clear_error(done, str(bad), "row group 1 (of 4, counted from 0) is damaged")


@pytest.mark.parametrize(
    ("on_drift", "error", "fragment"),
    [("fail", SchemaDrift, "drifted in"), ("warn", SchemaMismatch, "has no column(s) ['c']")],
)
def test_a_glob_file_with_other_columns_is_named(
    tmp_path: Path,
    database_url: str,
    pg_schema: str,
    pg_conn: Conn,
    on_drift: str,
    error: type[IngestError],
    fragment: str,
) -> None:
    """An append of a glob names the file whose columns differ; earlier files stay loaded."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("a,b\n1,2\n")
    (tmp_path / "in" / "b.csv").write_text("a,c\n3,4\n")
    cfg = source_config(
        tmp_path,
        tmp_path / "in" / "*.csv",
        f"on_drift: {on_drift}",
        schema=pg_schema,
        url=database_url,
        if_table_exists="append",
    )
    with pytest.raises(error) as info:
        run_source(load_config(cfg), progress=False)
    assert str(tmp_path / "in" / "b.csv") in str(info.value) and fragment in str(info.value)
    assert rows(pg_conn, pg_schema, "t", "a, b") == [(1, 2)]
    done = cli("--config", str(cfg))
    assert_one_clear_error(done, str(tmp_path / "in" / "b.csv"))
