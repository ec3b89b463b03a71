"""Values PostgreSQL refuses mid-COPY are found first and set aside, so the rest still loads."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from configs import write_config
from psycopg import sql

from ingest import load_config, run_source
from ingest.errors import BadRowsOverLimit
from ingest.stages.server_limits import NUL_RULE, RANGE_RULE, printable, refused_values

Conn = psycopg.Connection[tuple[object, ...]]
# Days since 1970 of PostgreSQL's first and last date, and the days just outside them.
FIRST_DAY, LAST_DAY = -2_440_588, 2_145_042_905


def _dates(days: list[int | None]) -> pl.Series:
    return pl.Series("d", days, pl.Int32).cast(pl.Date)


def test_a_nul_byte_in_text_is_a_reject_naming_its_row_and_column() -> None:
    """A NUL in a String or Categorical value is rule nul_byte; other text and nulls pass."""
    frame = pl.DataFrame(
        {
            "r": [10, 11, 12, 13],
            "s": ["a", "b\x00c", None, "\x00"],
            "c": pl.Series(["x", "y", "z\x00", "w"], dtype=pl.Categorical),
        }
    )
    found = refused_values(frame, "r")
    assert found.rows() == [
        (
            11,
            "s",
            NUL_RULE,
            "'b\\x00c' holds a NUL byte (\\x00), which PostgreSQL text cannot store",
        ),
        (13, "s", NUL_RULE, "'\\x00' holds a NUL byte (\\x00), which PostgreSQL text cannot store"),
        (
            12,
            "c",
            NUL_RULE,
            "'z\\x00' holds a NUL byte (\\x00), which PostgreSQL text cannot store",
        ),
    ]


def test_dates_are_refused_exactly_outside_postgresql_range() -> None:
    """4714-11-24 BC and 5874897-12-31 AD pass; the days either side of them are rejects."""
    frame = pl.DataFrame(
        {
            "r": [0, 1, 2, 3, 4],
            "d": _dates([FIRST_DAY, FIRST_DAY - 1, LAST_DAY, LAST_DAY + 1, None]),
        }
    )
    found = refused_values(frame, "r")
    assert found["r"].to_list() == [1, 3]
    assert set(found["rule"]) == {RANGE_RULE}
    assert found["reason"][1] == (
        f"'{LAST_DAY + 1} days since 1970' is outside PostgreSQL's date range"
        " (4714 BC to 5874897 AD)"
    )


@pytest.mark.parametrize("unit", ["ms", "us", "ns"])
def test_timestamps_are_refused_outside_postgresql_range(unit: str) -> None:
    """Before 4714-11-24 BC is a reject in every unit; year 1 and 2262 (ns' limit) pass."""
    per_us = {"ms": 0.001, "us": 1, "ns": 1000}[unit]
    first_us = -210_866_803_200_000_000
    raw = [
        int(first_us * per_us),
        int((first_us - 1000) * per_us),
        int(-62_135_596_800 * 10**6 * per_us),
        0,
    ]
    if unit == "ns":  # ns cannot reach 4714 BC at all: nothing to refuse
        raw = [-(2**62), 2**62]
    frame = pl.DataFrame(
        {"r": list(range(len(raw))), "t": pl.Series(raw, dtype=pl.Int64).cast(pl.Datetime(unit))}
    )
    found = refused_values(frame, "r")
    assert found["r"].to_list() == ([] if unit == "ns" else [1])


def test_numbers_and_good_values_cost_no_rejects() -> None:
    """A frame of numbers, bytes and in-range values has nothing the server refuses."""
    frame = pl.DataFrame(
        {"r": [0, 1], "n": [1, 2], "b": [b"\x00", b"x"], "d": _dates([0, 19_000]), "s": ["a", ""]}
    )
    assert refused_values(frame, "r").height == 0
    assert refused_values(frame.clear(), "r").height == 0


def test_printable_shows_a_date_polars_cannot_print_as_its_number() -> None:
    """A reject's raw row can be JSON even for a date past year 262,000 (polars panics there)."""
    frame = pl.DataFrame({"d": _dates([LAST_DAY, 0])})
    shown = printable(frame).select(pl.struct("d").struct.json_encode()).to_series().to_list()
    assert shown == [f'{{"d":{LAST_DAY}}}', '{"d":0}']
    ordinary = pl.DataFrame({"d": _dates([0])})
    assert printable(ordinary) is ordinary


def _rejected(conn: Conn, schema: str) -> list[tuple[object, ...]]:
    return conn.execute(
        sql.SQL(
            "select row_kind, row_number, column_name, rule from {} order by row_number"
        ).format(sql.Identifier(schema, "t__rejected"))
    ).fetchall()


def test_nul_bytes_are_quarantined_by_line_and_the_rest_loads(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """With max_bad_rows room, NUL rows go to quarantine by CSV line; every other row loads."""
    data = tmp_path / "nul.csv"
    lines = [b"%d,v%d" % (i, i) for i in range(50_000)]
    lines[7], lines[40_000] = b"7,a\x00b", b'40000,"multi\nline\x00"'
    data.write_bytes(b"id,v\n" + b"\n".join(lines) + b"\n")
    config = write_config(
        tmp_path,
        data,
        pg_schema,
        database_url,
        table="t",
        extra="validation_data: {max_bad_rows: 2}",
    )

    report = run_source(load_config(config), progress=False)

    assert (report.status, report.rows_loaded, report.rows_rejected) == ("success", 49_998, 2)
    assert _rejected(pg_conn, pg_schema) == [
        ("csv_line", 9, "v", NUL_RULE),
        ("csv_line", 40_002, "v", NUL_RULE),
    ]
    loaded = pg_conn.execute(
        sql.SQL("select count(*), sum(id) from {} where strpos(v, 'v') = 1").format(
            sql.Identifier(pg_schema, "t")
        )
    ).fetchone()
    assert loaded == (49_998, sum(range(50_000)) - 7 - 40_000)


def test_out_of_range_dates_are_quarantined_by_parquet_row(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """A Parquet date or timestamp PostgreSQL cannot hold is a reject naming its row."""
    data = tmp_path / "dates.parquet"
    days = pa.array([0, LAST_DAY + 1, 19_000], pa.date32())
    stamps = pa.array([0, 0, -10_000 * 365 * 86_400 * 10**6], pa.timestamp("us", "UTC"))
    pq.write_table(pa.table({"id": [1, 2, 3], "d": days, "t": stamps}), data)
    config = write_config(
        tmp_path,
        data,
        pg_schema,
        database_url,
        table="t",
        extra="validation_data: {max_bad_rows: 5}",
    )

    report = run_source(load_config(config), progress=False)

    assert (report.rows_loaded, report.rows_rejected) == (1, 2)
    assert _rejected(pg_conn, pg_schema) == [
        ("parquet_row", 1, "d", RANGE_RULE),
        ("parquet_row", 2, "t", RANGE_RULE),
    ]


def test_without_room_a_nul_byte_fails_naming_file_line_and_column(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """No max_bad_rows room: BadRowsOverLimit names the file, the line and the column."""
    data = tmp_path / "nul.csv"
    data.write_bytes(b"id,v\n1,a\n2,b\x00\n")

    with pytest.raises(BadRowsOverLimit) as raised:
        run_source(
            load_config(write_config(tmp_path, data, pg_schema, database_url, table="t")),
            progress=False,
        )

    message = str(raised.value)
    assert message.startswith(f"{data}: 1 bad row(s)")
    assert "line 3, column 'v': nul_byte: 'b\\x00' holds a NUL byte" in message
    assert "Traceback" not in message
    exists = pg_conn.execute("select to_regclass(%s)", (f"{pg_schema}.t",)).fetchone()
    assert exists == (None,)


def test_columns_the_reader_saw_no_nul_in_are_not_searched() -> None:
    """`nul_free` names text columns to skip; dates are still checked in them."""
    frame = pl.DataFrame({"r": [0], "s": ["a\x00"], "d": _dates([LAST_DAY + 1])})
    assert refused_values(frame, "r", nul_free={"s", "d"})["column"].to_list() == ["d"]


def test_the_reader_says_which_columns_hold_no_nul(tmp_path: Path) -> None:
    """A CSV chunk without NUL clears every column; a Parquet dictionary without one, its own."""
    from ingest.config import CsvOptions
    from ingest.stages import read
    from ingest.stages.plan import make_plan
    from ingest.stages.profile import profile_file
    from tests.stages.partitions import whole_file

    clean, dirty = tmp_path / "clean.csv", tmp_path / "dirty.csv"
    clean.write_bytes(b"id,v\n1,a\n")
    dirty.write_bytes(b"id,v\n1,a\x00\n")
    data = tmp_path / "d.parquet"
    n = 10_000  # enough rows for the pages to hold only codes (read.dictionary_columns)
    table = pa.table(
        {
            "id": list(range(n)),
            "ok": ["a", "b"] * (n // 2),
            "bad": ["a\x00", "b"] * (n // 2),
            "plain": [f"value {i}" for i in range(n)],
        }
    )
    pq.write_table(table, data, use_dictionary=["ok", "bad"])
    found = {}
    for path, fmt in ((clean, "csv"), (dirty, "csv"), (data, "parquet")):
        profile = profile_file(path, fmt, 1000, CsvOptions())
        plan = make_plan(profile, 1 << 30, base_bytes=0, workers=1, forced="eager")
        schema = dict(profile.schema)
        part = whole_file(path, fmt, has_header=True)
        chunks = list(read.batches(part, CsvOptions(), schema, plan))
        found[path.name] = set().union(*(c.nul_free for c in chunks))
    assert found == {"clean.csv": {"id", "v"}, "dirty.csv": set(), "d.parquet": {"ok"}}
