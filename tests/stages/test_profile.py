"""Profiling reads metadata and a spread sample, never the whole file."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from ingest.config import CsvOptions
from ingest.demo import employees
from ingest.errors import BadColumnName, SourceFileError
from ingest.stages.profile import detect_format, profile_file


def test_parquet_rows_come_from_the_footer(tmp_path: Path) -> None:
    """Parquet row count is exact and every column has a footer size and a width."""
    path = tmp_path / "e.parquet"
    frame = employees(50_000)
    frame.write_parquet(path, row_group_size=10_000)
    prof = profile_file(path, "parquet", 1000, CsvOptions())
    assert prof.rows == 50_000 and prof.rows_exact
    assert list(prof.schema) == frame.columns
    assert all(c.footer_bytes for c in prof.columns)
    # The in-memory estimate is within 25% of the real frame's size.
    assert prof.frame_bytes == pytest.approx(frame.estimated_size(), rel=0.25)


def test_large_csv_is_sampled_through_the_file(tmp_path: Path) -> None:
    """A big CSV's row count is estimated from line sizes, and late rows shape the types."""
    path = tmp_path / "big.csv"
    head = pl.DataFrame({"id": range(900_000), "v": ["1"] * 900_000})
    tail = pl.DataFrame({"id": range(900_000, 1_000_000), "v": ["x1.5"] * 100_000})
    pl.concat([head, tail]).write_csv(path)
    assert path.stat().st_size > 8 << 20
    prof = profile_file(path, "csv", 2000, CsvOptions())
    assert not prof.rows_exact
    assert prof.rows == pytest.approx(1_000_000, rel=0.05)
    assert prof.schema["v"] == pl.String  # the head alone says int; the spread sample sees text


def test_small_csv_is_read_whole(tmp_path: Path) -> None:
    """A small CSV is profiled whole, so its row count is exact."""
    path = tmp_path / "s.csv"
    employees(1234).write_csv(path)
    prof = profile_file(path, "csv", 100, CsvOptions())
    assert prof.rows == 1234 and prof.rows_exact
    assert prof.schema["Age"] == pl.Int64


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "the file is empty"),
        ("bad.parquet", b"this is not parquet", "not a readable Parquet file"),
    ],
)
def test_unreadable_files_are_named(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    """Empty or damaged files raise SourceFileError naming the file."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceFileError, match=message) as info:
        profile_file(path, detect_format(path, "auto"), 100, CsvOptions())
    assert str(path) in str(info.value)


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    """A missing file and an unknown suffix get errors that say what to do."""
    with pytest.raises(SourceFileError, match="no such file"):
        profile_file(tmp_path / "nope.csv", "csv", 100, CsvOptions())
    with pytest.raises(SourceFileError, match="format: csv"):
        detect_format(tmp_path / "data.bin", "auto")


@pytest.mark.parametrize(
    ("header", "fragment"),
    [("id,name,id", "'id' appears twice"), ("id,,name", "'' in the header is empty")],
)
def test_bad_headers_are_refused(tmp_path: Path, header: str, fragment: str) -> None:
    """Duplicate or empty header names are errors naming the file and the column."""
    path = tmp_path / "h.csv"
    path.write_text(f"{header}\n1,2,3\n")
    with pytest.raises(BadColumnName, match=fragment) as info:
        profile_file(path, "csv", 100, CsvOptions())
    assert str(path) in str(info.value)
