"""A load keeps the file's values exactly, or refuses them; it never changes one without a word."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ingest import load_config, run_source
from ingest.errors import BadRowsOverLimit, SourceFileError

Conn = psycopg.Connection[tuple[object, ...]]


def _load(
    tmp_path: Path, body: str, schema: str, url: str, *, extra: str = "", table: str = "t"
) -> tuple[object, Path]:
    data = tmp_path / f"{table}.csv"
    data.write_text(body)
    cfg = tmp_path / f"{table}.yml"
    cfg.write_text(f"""
path: {{input_path: '{data}'}}
{extra}
database:
  table_name: {table}
  if_table_exists: replace
  schema: {schema}
  metadata_schema: {schema}
  url: '{url}'
""")
    return run_source(load_config(cfg), progress=False), data


def _rows(conn: Conn, schema: str, query: str) -> list[tuple[object, ...]]:
    return conn.execute(sql.SQL(query).format(sql.Identifier(schema))).fetchall()


def test_empty_lines_are_skipped_and_counted(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn
) -> None:
    """Empty lines in the middle and at the end hold no record: no row of NULLs for them."""
    report, _ = _load(tmp_path, "a,b\n1,x\n\n2,y\r\n\r\n3,z\n\n", pg_schema, database_url)
    assert _rows(pg_conn, pg_schema, "select a, b from {}.t order by a") == [
        (1, "x"),
        (2, "y"),
        (3, "z"),
    ]
    assert report.rows_loaded == 3  # type: ignore[attr-defined]
    assert any("skipped 3 empty line(s)" in n for n in report.notes)  # type: ignore[attr-defined]


@pytest.mark.parametrize("before", [1, 110_000])
def test_a_row_with_too_few_fields_is_refused_naming_its_line(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn, before: int
) -> None:
    """A short row would load its missing fields as NULL: the load is refused at its line."""
    _load(tmp_path, "a,b,c\n0,keep,me\n", pg_schema, database_url)
    rows = "".join(f"{i},v{i},w\n" for i in range(1, before + 1))
    with pytest.raises(
        SourceFileError, match=rf"line {before + 2:,}: 2 fields where the header has 3"
    ):
        _load(tmp_path, f"a,b,c\n{rows}{before + 1},short\n", pg_schema, database_url)
    assert _rows(pg_conn, pg_schema, "select a, b, c from {}.t") == [(0, "keep", "me")]


def test_a_column_typed_as_text_keeps_the_files_text(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn
) -> None:
    """`string` keeps `00501`, `1.50`, `1e3` and `007.0` as written: no number printed back."""
    values = ["00501", "02134", "1.50", "1e3", "007.0"]
    body = "id,code\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values))
    _load(
        tmp_path, body, pg_schema, database_url, extra="schema_config: {data_type: {code: string}}"
    )
    assert [r[0] for r in _rows(pg_conn, pg_schema, "select code from {}.t order by id")] == values


def test_an_untyped_column_with_leading_zeros_stays_text(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn
) -> None:
    """Guessing an integer for zip codes would drop their zeros: the guess keeps them as text."""
    _load(tmp_path, "zip\n00501\n12345\n02134\n", pg_schema, database_url)
    assert [r[0] for r in _rows(pg_conn, pg_schema, "select zip from {}.t")] == [
        "00501",
        "12345",
        "02134",
    ]


def test_decimal_text_is_parsed_exactly(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn
) -> None:
    """decimal(p,s) from CSV text never goes through a float."""
    body = "id,amount\n1,12345678901234567.9\n2,0.1\n3,-99999999999999999.9\n"
    _load(
        tmp_path,
        body,
        pg_schema,
        database_url,
        extra="schema_config: {data_type: {amount: 'decimal(18,1)'}}",
    )
    assert [r[0] for r in _rows(pg_conn, pg_schema, "select amount from {}.t order by id")] == [
        Decimal("12345678901234567.9"),
        Decimal("0.1"),
        Decimal("-99999999999999999.9"),
    ]


def test_a_fraction_in_an_integer_column_is_a_bad_row(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn
) -> None:
    """int64 on `1.5` or `-7.9` is a bad row, never truncated to 1 or -7."""
    extra = "schema_config: {data_type: {n: int64}}\nvalidation_data: {max_bad_rows: 10}"
    report, _ = _load(
        tmp_path, "id,n\n1,1.5\n2,3\n3,-7.9\n4,2.0\n", pg_schema, database_url, extra=extra
    )
    assert _rows(pg_conn, pg_schema, "select id, n from {}.t order by id") == [(2, 3)]
    assert report.rows_rejected == 3  # type: ignore[attr-defined]
    rejected = _rows(
        pg_conn, pg_schema, "select row_number, reason from {}.t__rejected order by row_number"
    )
    assert [r[0] for r in rejected] == [2, 4, 5]
    assert "'1.5' is not int64" in str(rejected[0][1])


def test_integers_wider_than_int64_load_exactly_as_numeric(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn
) -> None:
    """An untyped column of integers past int64 loads as numeric, every digit kept."""
    wide = ["99999999999999999999", "-123456789012345678901234567890", "7"]
    _load(
        tmp_path,
        "id,big\n" + "".join(f"{i},{v}\n" for i, v in enumerate(wide)),
        pg_schema,
        database_url,
    )
    got = _rows(pg_conn, pg_schema, "select big from {}.t order by id")
    assert [r[0] for r in got] == [Decimal(v) for v in wide]
    kind = pg_conn.execute(
        "select data_type from information_schema.columns"
        " where table_schema = %s and table_name = 't' and column_name = 'big'",
        (pg_schema,),
    ).fetchone()
    assert kind == ("numeric",)


def test_lines_stay_exact_after_quoted_fields_that_span_lines(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn
) -> None:
    """Many multi-line fields across chunk boundaries load, and a bad row is named by its line."""
    lines, body, bad_line = 2, [], 0
    for i in range(60_000):
        if i == 59_000:
            bad_line = lines
            body.append(f'{i},"x",forty\n')
            lines += 1
        elif i % 3 == 0:
            body.append(f'{i},"two\nlines {i}",{i % 90}\n')
            lines += 2
        else:
            body.append(f"{i},plain {i},{i % 90}\n")
            lines += 1
    extra = (
        "schema_config: {data_type: {age: int64}}\nvalidation_data: {max_bad_rows: 1}\n"
        "os_configuration: {n_rows_sample: 500}"
    )
    report, _ = _load(
        tmp_path, "id,text,age\n" + "".join(body), pg_schema, database_url, extra=extra
    )
    assert report.rows_loaded == 59_999  # type: ignore[attr-defined]
    assert _rows(pg_conn, pg_schema, "select text from {}.t where id = 3") == [("two\nlines 3",)]
    rejected = _rows(pg_conn, pg_schema, "select row_number from {}.t__rejected")
    assert rejected == [(bad_line,)]


def test_a_short_row_over_the_bad_row_limit_names_the_line_after_multiline_fields(
    tmp_path: Path, pg_schema: str, database_url: str
) -> None:
    """The refusal's line counts the lines that quoted fields span."""
    body = 'a,b\n1,"one\ntwo\nthree"\n2\n'
    with pytest.raises(SourceFileError, match="line 5: 1 fields where the header has 2"):
        _load(tmp_path, body, pg_schema, database_url)


def test_an_unclosed_quote_names_its_line(
    tmp_path: Path, pg_schema: str, database_url: str
) -> None:
    """A quote that never closes is named by the line it opens on, not as a polars message."""
    with pytest.raises(SourceFileError, match="line 3: a quote that does not close"):
        _load(tmp_path, 'a,b\n1,x\n2,"open\n3,y\n', pg_schema, database_url)


def test_a_bad_row_limit_still_applies_to_fraction_rows(
    tmp_path: Path, pg_schema: str, database_url: str
) -> None:
    """With the default limit a truncating value fails the load instead of loading changed."""
    with pytest.raises(BadRowsOverLimit, match="line 2"):
        _load(
            tmp_path,
            "id,n\n1,1.5\n",
            pg_schema,
            database_url,
            extra="schema_config: {data_type: {n: int64}}",
        )


def test_a_date_format_given_in_data_type_parses_every_row(
    tmp_path: Path, pg_schema: str, database_url: str, pg_conn: Conn
) -> None:
    """`date:%d/%m/%Y` parses that format; a value in another is a bad row naming the format."""
    extra = "schema_config: {data_type: {d: 'date:%d/%m/%Y'}}\nvalidation_data: {max_bad_rows: 1}"
    _load(
        tmp_path,
        "id,d\n1,31/12/2024\n2,01/02/2025\n3,2025-03-04\n",
        pg_schema,
        database_url,
        extra=extra,
    )
    got = _rows(pg_conn, pg_schema, "select id, d::text from {}.t order by id")
    assert got == [(1, "2024-12-31"), (2, "2025-02-01")]
    reason = _rows(pg_conn, pg_schema, "select reason from {}.t__rejected")
    assert reason == [("'2025-03-04' is not date (%d/%m/%Y)",)]


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("int64:%d", "for date, datetime and time only"),
        ("date:dd/mm", "strftime directives"),
    ],
)
def test_a_bad_format_in_data_type_is_a_config_error(tmp_path: Path, name: str, says: str) -> None:
    """A format on a non-temporal type, or one without directives, is refused at load time."""
    from ingest.errors import ConfigError

    cfg = tmp_path / "c.yml"
    cfg.write_text(
        f"path: {{input_path: x.csv}}\nschema_config: {{data_type: {{d: '{name}'}}}}\n"
        "database: {table_name: t}\n"
    )
    with pytest.raises(ConfigError, match=says):
        load_config(cfg)
