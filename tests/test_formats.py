"""Every input format loads the source's values exactly, names a bad row where a person finds it,
and leaves the target as it was when the file is damaged."""

from __future__ import annotations

import gzip
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.ipc as ipc
import pytest
from psycopg import sql

from ingest import load_config, run_source
from ingest.config import CsvOptions
from ingest.errors import BadRowsOverLimit, DamagedArchive, SourceFileError
from ingest.stages import jsonl
from ingest.stages.formats import detect
from ingest.stages.profile import profile_file
from ingest.stages.stream import zstd

Conn = psycopg.Connection[tuple[object, ...]]

# Text that a careless reader changes: quotes, a newline inside a field, a leading zero, nulls.
SOURCE = pl.DataFrame(
    {
        "id": list(range(2_000)),
        "code": [f"{i:05d}" for i in range(2_000)],
        "note": [None if i % 7 == 0 else f'say "hi"\nto {i}' for i in range(2_000)],
        "amount": [None if i % 11 == 0 else i * 0.25 - 100 for i in range(2_000)],
        "big": [10**18 + i for i in range(2_000)],
    }
)


def _compress(data: bytes, kind: str) -> bytes:
    if kind == "gzip":
        return gzip.compress(data)
    if kind == "zstd":
        return zstd.compress(data, options={zstd.CompressionParameter.checksum_flag: 1})
    return data


_SUFFIX = {"gzip": ".gz", "zstd": ".zst", "none": ""}


def _load(tmp_path: Path, data: Path, schema: str, url: str, extra: str = "") -> Any:
    cfg = tmp_path / "config.yml"
    cfg.write_text(
        f"database: {{schema: {schema}, metadata_schema: {schema}, url: '{url}'}}\n"
        f"sources:\n  s:\n    input_path: '{data}'\n    table_name: t\n"
        f"    if_table_exists: replace\n"
        + "".join(f"    {line}\n" for line in extra.splitlines() if line.strip())
    )
    return run_source(load_config(cfg), progress=False)


def _select(conn: Conn, schema: str, query: str) -> list[tuple[Any, ...]]:
    return conn.execute(sql.SQL(query).format(sql.Identifier(schema))).fetchall()


def _rejected(conn: Conn, schema: str, run_id: str, columns: str) -> list[tuple[Any, ...]]:
    """The quarantined rows of one run, in file order."""
    query = sql.SQL("select {} from {}.t__rejected where run_id = %s order by row_number").format(
        sql.SQL(columns), sql.Identifier(schema)
    )
    return conn.execute(query, [run_id]).fetchall()


def _facts(conn: Conn, schema: str) -> tuple[Any, ...]:
    row = conn.execute(
        sql.SQL(
            "select count(*), count(note), count(amount), sum(amount), sum(big), sum(id) from {}.t"
        ).format(sql.Identifier(schema))
    ).fetchone()
    assert row is not None
    return row


def _expected_facts() -> tuple[Any, ...]:
    return (
        SOURCE.height,
        SOURCE["note"].count(),
        SOURCE["amount"].count(),
        SOURCE["amount"].sum(),
        Decimal(sum(SOURCE["big"].to_list())),
        SOURCE["id"].sum(),
    )


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
@pytest.mark.parametrize("separator", [",", "\t"])
def test_compressed_text_loads_the_sources_values(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn, kind: str, separator: str
) -> None:
    """.csv.gz, .csv.zst, .tsv.gz, .tsv.zst: counts, nulls, sums and every row equal the source."""
    name = "data.tsv" if separator == "\t" else "data.csv"
    path = tmp_path / (name + _SUFFIX[kind])
    path.write_bytes(_compress(SOURCE.write_csv(separator=separator).encode(), kind))
    report = _load(tmp_path, path, pg_schema, database_url)
    assert (report.format, report.strategy, report.rows_loaded) == ("csv", "streaming", 2_000)
    facts = _facts(pg_conn, pg_schema)
    assert facts[:3] == _expected_facts()[:3] and facts[4:] == _expected_facts()[4:]
    assert math.isclose(facts[3], _expected_facts()[3])
    rows = _select(pg_conn, pg_schema, "select id, code, note, amount, big from {}.t order by id")
    assert [(*r[:4], int(r[4])) for r in rows] == SOURCE.rows()


def _lines_with_a_bad_value(kind: str, tmp_path: Path) -> Path:
    """A CSV whose quoted fields span lines, with 'forty' in an integer column on line 5,003."""
    body = "id,note\n" + "".join(f'{i},"two\nlines"\n' for i in range(2_500))
    body += 'forty,"x"\n' + "".join(f"{i},y\n" for i in range(2_500, 2_600))
    path = tmp_path / f"bad.csv{_SUFFIX[kind]}"
    path.write_bytes(_compress(body.encode(), kind))
    return path


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_a_bad_row_is_named_by_its_line_of_the_decompressed_text(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn, kind: str
) -> None:
    """Quarantine and the over-limit error name line 5,002 of the text, past quoted newlines."""
    path = _lines_with_a_bad_value(kind, tmp_path)
    extra = "schema_config: {data_type: {id: int64}}"
    with pytest.raises(BadRowsOverLimit, match=r"line 5002, column 'id'"):
        _load(tmp_path, path, pg_schema, database_url, extra)
    report = _load(
        tmp_path, path, pg_schema, database_url, extra + "\nvalidation_data: {max_bad_rows: 1}"
    )
    assert (report.rows_loaded, report.rows_rejected) == (2_600, 1)
    kept = _rejected(pg_conn, pg_schema, report.run_id, "row_kind, row_number, source_file")
    assert kept == [("csv_line", 5_002, str(path))]


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_a_truncated_archive_leaves_the_target_as_it_was(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn, kind: str
) -> None:
    """A .gz cut short mid-file: one error naming the file and the lines decompressed; no change."""
    path = tmp_path / f"data.csv{_SUFFIX[kind]}"
    path.write_bytes(_compress(b"id,note\n1,old\n", kind))
    _load(tmp_path, path, pg_schema, database_url)
    body = "id,note\n" + "".join(f"{i},v{i % 97}\n" for i in range(1_500_000))
    packed = _compress(body.encode(), kind)
    path.write_bytes(packed[: len(packed) * 3 // 4])
    with pytest.raises(DamagedArchive) as info:
        _load(tmp_path, path, pg_schema, database_url)
    assert str(path) in str(info.value) and "truncated" in str(info.value)
    assert 500_000 < info.value.lines < 1_500_000
    assert _select(pg_conn, pg_schema, "select id, note from {}.t") == [(1, "old")]
    status = _select(pg_conn, pg_schema, "select status from {}.runs order by started_at")
    assert [s[0] for s in status] == ["success", "failed"]


NESTED = [
    {"id": 0, "tags": ["a", 1, None], "obj": {"k": {"deep": [1.5, True]}}, "n": 1.25, "s": "x"},
    {"id": 1, "tags": [], "obj": {"other": "y"}, "n": None, "s": None},
    {"id": 2, "tags": None, "obj": None, "n": -3.0, "s": 'q"uote\nline'},
]


@pytest.mark.parametrize("kind", ["none", "gzip", "zstd"])
def test_json_lines_load_nested_values_as_jsonb(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn, kind: str
) -> None:
    """Objects and arrays land as jsonb equal to the source; scalars keep their type and nulls."""
    rows = [NESTED[i % 3] | {"id": i} for i in range(3_000)]
    path = tmp_path / f"data.jsonl{_SUFFIX[kind]}"
    path.write_bytes(_compress(("\n".join(json.dumps(r) for r in rows) + "\n").encode(), kind))
    report = _load(tmp_path, path, pg_schema, database_url)
    assert (report.format, report.rows_loaded) == ("jsonl", 3_000)
    types = pg_conn.execute(
        "select column_name::text, data_type::text from information_schema.columns"
        " where table_schema = %s and table_name = 't' and column_name not like '\\_%%'"
        " order by ordinal_position",
        [pg_schema],
    ).fetchall()
    assert types == [
        ("id", "bigint"),
        ("tags", "jsonb"),
        ("obj", "jsonb"),
        ("n", "double precision"),
        ("s", "text"),
    ]
    loaded = _select(pg_conn, pg_schema, "select id, tags, obj, n, s from {}.t order by id")
    assert [dict(zip(["id", "tags", "obj", "n", "s"], r, strict=True)) for r in loaded] == rows


def test_a_line_that_is_not_json_is_a_bad_row_with_its_line(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn
) -> None:
    """`{oops` on line 1,501 and an array on line 1,502: quarantined by line, or refused by line."""
    lines = [json.dumps({"id": i, "v": f"x{i}"}) for i in range(3_000)]
    lines[1_500], lines[1_501] = "{oops", "[1, 2]"
    path = tmp_path / "data.ndjson.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(
        BadRowsOverLimit, match=r"line 1501, column '\(whole line\)': json: not JSON"
    ):
        _load(tmp_path, path, pg_schema, database_url)
    report = _load(tmp_path, path, pg_schema, database_url, "validation_data: {max_bad_rows: 2}")
    assert (report.rows_loaded, report.rows_rejected) == (2_998, 2)
    kept = _rejected(pg_conn, pg_schema, report.run_id, "row_kind, row_number, reason, raw_values")
    assert [k[:2] for k in kept] == [("jsonl_line", 1_501), ("jsonl_line", 1_502)]
    assert kept[1][2] == "a JSON list, not an object" and kept[0][3] == "{oops"
    ids = _select(pg_conn, pg_schema, "select count(*), sum(id) from {}.t")
    assert ids == [(2_998, sum(range(3_000)) - 1_500 - 1_501)]


def test_nan_infinity_and_overflowing_numbers_are_bad_rows_by_line(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn
) -> None:
    """`NaN`, `-Infinity` and `1e400` are JSON to Python's parser, not to polars' (nor to the
    JSON standard): bad rows by line, in the sampled head too; the rest load in order."""
    lines = [json.dumps({"id": i, "v": f"x{i}"}) for i in range(20_000)]
    lines[6] = '{"id": 6, "v": NaN}'
    lines[8_999] = "{oops"
    lines[14_999] = '{"id": 14999, "v": -Infinity}'
    lines[17_999] = '{"id": 17999, "v": 1e400}'
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = _load(tmp_path, path, pg_schema, database_url, "validation_data: {max_bad_rows: 4}")
    assert (report.rows_loaded, report.rows_rejected) == (19_996, 4)
    kept = _rejected(pg_conn, pg_schema, report.run_id, "row_number, reason")
    assert kept == [
        (7, "not JSON (NaN is not a JSON number)"),
        (9_000, "not JSON (Expecting property name enclosed in double quotes at character 2)"),
        (15_000, "not JSON (-Infinity is not a JSON number)"),
        (18_000, "not JSON (1e400 is out of range)"),
    ]
    got = _select(pg_conn, pg_schema, "select count(*), sum(id) from {}.t")
    assert got == [(19_996, sum(range(20_000)) - 6 - 8_999 - 14_999 - 17_999)]
    order = _select(pg_conn, pg_schema, "select id from {}.t where id between 5 and 8 order by id")
    assert order == [(5,), (7,), (8,)]


def test_lines_polars_cannot_read_are_found_by_halving_the_piece() -> None:
    """Lines polars refuses among good ones: each found and named, the others kept in order,
    in far fewer reads than one a line."""
    good = [json.dumps({"id": i}).encode() for i in range(1_000)]
    lines = [*good[:10], b"{oops", *good[10:700], b"[1", *good[700:]]
    rows = list(range(1, len(lines) + 1))
    bad: list[tuple[int, str, str]] = []
    frames, kept = jsonl._readable(lines, rows, {"id": pl.String()}, bad)
    assert [b[0] for b in bad] == [11, 702] and all("not readable" in b[1] for b in bad)
    assert pl.concat(frames)["id"].to_list() == [str(i) for i in range(1_000)]
    assert kept == [r for r in rows if r not in (11, 702)]
    assert len(frames) < 40  # halving: pieces around two bad lines, not a thousand reads


@pytest.mark.parametrize("bad_line", [False, True])
def test_a_key_the_sample_did_not_see_is_refused_not_dropped(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn, bad_line: bool
) -> None:
    """A key first seen on line 450,001 (past the sampled head) names the line; no change."""
    lines = [json.dumps({"id": i}) for i in range(500_000)]
    lines[450_000] = json.dumps({"id": 450_000, "late": "value"})
    if bad_line:  # the piece is read line by line: the key is still found
        lines[450_001] = "{oops"
    path = tmp_path / "data.jsonl.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    extra = "validation_data: {max_bad_rows: 5}"
    with pytest.raises(SourceFileError, match=r"line 450,001: key 'late' is not one of the"):
        _load(tmp_path, path, pg_schema, database_url, extra)
    assert pg_conn.execute("select to_regclass(%s)", [f"{pg_schema}.t"]).fetchone() == (None,)


def test_json_lines_are_typed_from_lines_spread_through_the_file(tmp_path: Path) -> None:
    """A column that is whole numbers for the first 8 MB and then has 0.5 is typed float."""
    head = [json.dumps({"id": i, "v": i, "pad": "p" * 100}) for i in range(60_000)]
    tail = [json.dumps({"id": i, "v": 0.5, "pad": "p"}) for i in range(60_000, 120_000)]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(head + tail) + "\n")
    profile = profile_file(path, "jsonl", 1_000, CsvOptions())
    assert profile.schema["v"] == pl.Float64()
    assert not profile.rows_exact and 60_000 < profile.rows < 240_000


def _arrow(tmp_path: Path, how: str) -> Path:
    table = pa.Table.from_pydict(
        {
            "id": pa.array(range(5_000), pa.int64()),
            "name": pa.array([None if i % 9 == 0 else f"n{i}" for i in range(5_000)]),
            "price": pa.array([Decimal(i) / 100 for i in range(5_000)], pa.decimal128(12, 2)),
            "tag": pa.array([("a", "b", "c")[i % 3] for i in range(5_000)]).dictionary_encode(),
        }
    )
    path = tmp_path / {"file": "data.arrow", "stream": "data.ipc", "feather": "data.feather"}[how]
    if how == "feather":
        feather.write_feather(table, path, chunksize=1_000)
    elif how == "file":
        with ipc.new_file(path, table.schema) as writer:
            writer.write_table(table, max_chunksize=700)
    else:
        with ipc.new_stream(path, table.schema) as writer:
            writer.write_table(table, max_chunksize=700)
    return path


@pytest.mark.parametrize("how", ["file", "stream", "feather"])
@pytest.mark.parametrize("strategy", ["eager", "streaming"])
def test_arrow_ipc_loads_the_sources_values(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn, how: str, strategy: str
) -> None:
    """Arrow files, streams and Feather, mapped (eager) or read batch by batch (streaming)."""
    path = _arrow(tmp_path, how)
    assert detect(path).format == "arrow"
    report = _load(tmp_path, path, pg_schema, database_url, f"strategy: {strategy}")
    assert (report.format, report.rows_loaded) == ("arrow", 5_000)
    got = _select(pg_conn, pg_schema, "select id, name, price, tag from {}.t order by id")
    expected = pa.ipc.open_file(path) if how != "stream" else None
    source = (expected.read_all() if expected else pa.ipc.open_stream(path).read_all()).to_pylist()
    assert [dict(zip(["id", "name", "price", "tag"], r, strict=True)) for r in got] == source


def test_a_damaged_arrow_file_is_one_error_and_no_change(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn
) -> None:
    """An Arrow file cut in half names the file; the table keeps its rows."""
    path = _arrow(tmp_path, "file")
    _load(tmp_path, path, pg_schema, database_url)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceFileError, match="not a readable Arrow IPC file"):
        _load(tmp_path, path, pg_schema, database_url)
    assert _select(pg_conn, pg_schema, "select count(*) from {}.t") == [(5_000,)]


def test_format_and_compression_in_the_config_override_the_name(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn
) -> None:
    """`format: tsv` and `compression: gzip` read a file named .dat; a wrong one is refused."""
    path = tmp_path / "export.dat"
    path.write_bytes(gzip.compress(b"a\tb\n1\tx\n2\ty\n"))
    with pytest.raises(SourceFileError, match=r"name \(export.dat\) has no .gz suffix"):
        _load(tmp_path, path, pg_schema, database_url)
    with pytest.raises(SourceFileError, match="cannot tell its format"):
        _load(tmp_path, path, pg_schema, database_url, "compression: gzip")
    with pytest.raises(SourceFileError, match=r"gzip-compressed .* but compression: zstd"):
        _load(tmp_path, path, pg_schema, database_url, "format: tsv\ncompression: zstd")
    _load(tmp_path, path, pg_schema, database_url, "format: tsv\ncompression: gzip")
    assert _select(pg_conn, pg_schema, "select a, b from {}.t order by a") == [(1, "x"), (2, "y")]


@pytest.mark.parametrize("resumable", [False, True])
def test_a_bad_row_of_a_glob_is_named_by_its_own_file(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn, resumable: bool
) -> None:
    """Quarantine names the file of the glob a bad row came from, not the glob's first file."""
    folder = tmp_path / "drop"
    folder.mkdir()
    for n in range(3):
        rows = [f"{n * 100 + i},v\n" for i in range(100)]
        if n == 2:
            rows.insert(10, "forty,x\n")  # line 12: the header, then ten good rows
        (folder / f"part-{n}.csv").write_text("id,note\n" + "".join(rows))
    workers = ", workers: 2" if resumable else ""
    cfg = tmp_path / "glob.yml"
    cfg.write_text(
        f"database: {{schema: {pg_schema}, metadata_schema: {pg_schema}, url: '{database_url}'"
        f"{workers}}}\n"
        f"sources:\n  s:\n    input_path: '{folder / 'part-*.csv'}'\n    table_name: t\n"
        "    if_table_exists: replace\n    schema_config: {data_type: {id: int64}}\n"
        + ("    partition_rows: 40\n" if resumable else "")
    )
    with pytest.raises(BadRowsOverLimit) as info:  # the default limit: no bad row
        run_source(load_config(cfg), progress=False)
    assert str(info.value.path) == str(folder / "part-*.csv")  # the glob, not its first file
    assert info.value.examples[0].startswith("part-2.csv: line 12, column 'id'")
    cfg.write_text(cfg.read_text() + "    validation_data: {max_bad_rows: 1}\n")
    report = run_source(load_config(cfg), progress=False)
    assert (report.rows_loaded, report.rows_rejected) == (300, 1)
    kept = _rejected(pg_conn, pg_schema, report.run_id, "row_number, source_file")
    assert kept == [(12, str(folder / "part-2.csv"))]
