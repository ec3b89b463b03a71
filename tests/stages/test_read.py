"""Reading a file in batches: every row, in order, whatever the file's encoding."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.config import CsvOptions
from ingest.stages import read
from ingest.stages.csvread import ROW
from ingest.stages.plan import make_plan
from ingest.stages.profile import profile_file
from tests.stages.partitions import whole_file

ROWS = 5_000


def _table(rows: int = ROWS) -> pa.Table:
    """Text of every kind: coded with nulls, all null, views, long values, nested, distinct."""
    words = ["north", None, "a value longer than twelve bytes", "", "sud-ouest \u00e9t\u00e9"]
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "region": pa.array([words[i % len(words)] for i in range(rows)]),
            "empty": pa.array([None] * rows, pa.string()),
            "wide": pa.array([f"w{i % 7}" for i in range(rows)], pa.large_string()),
            # Writers such as tpchgen-cli store string_view in the file's Arrow schema.
            "view": pa.array([f"v{i % 3}" for i in range(rows)], pa.string_view()),
            "unique": pa.array([f"row {i} of many" for i in range(rows)]),
            "point": pa.array([{"x": i, "tag": "p"} for i in range(rows)]),
        }
    )


def _loaded(path: Path, strategy: str, batch_rows: int | None = None) -> pl.DataFrame:
    profile = profile_file(path, "parquet", 100, CsvOptions())
    plan = make_plan(profile, 1 << 30, base_bytes=0, forced=strategy)
    if batch_rows is not None:
        plan = replace(plan, batch_rows=batch_rows)
    chunks = read.batches(whole_file(path, "parquet", True), CsvOptions(), profile.schema, plan)
    return pl.concat([chunk.frame for chunk in chunks])


def test_dictionary_coded_text_columns_are_chosen(tmp_path: Path) -> None:
    """Only top-level text columns whose data pages hold codes are read as dictionaries."""
    path = tmp_path / "mixed.parquet"
    # A 4 KiB dictionary limit makes the distinct column fall back to plain pages.
    pq.write_table(_table(), path, row_group_size=2_000, dictionary_pagesize_limit=4096)
    source = pq.ParquetFile(path)

    chosen = read.dictionary_columns(source.metadata, source.schema_arrow)

    assert chosen == ["region", "empty", "wide", "view"]


def test_plain_encoded_text_is_not_read_as_codes(tmp_path: Path) -> None:
    """A file written without dictionaries has nothing to gather."""
    path = tmp_path / "plain.parquet"
    pq.write_table(_table(), path, use_dictionary=False)
    source = pq.ParquetFile(path)

    assert read.dictionary_columns(source.metadata, source.schema_arrow) == []


@pytest.mark.parametrize(
    ("strategy", "batch_rows"), [("eager", None), ("lazy", None), ("streaming", 777)]
)
def test_coded_columns_load_the_same_rows(
    tmp_path: Path, strategy: str, batch_rows: int | None
) -> None:
    """Codes gathered into views give the very values, nulls and order a plain read gives."""
    path = tmp_path / "mixed.parquet"
    pq.write_table(_table(), path, row_group_size=2_000, dictionary_pagesize_limit=4096)

    loaded = _loaded(path, strategy, batch_rows)

    expected = pl.read_parquet(path)
    assert loaded[ROW].to_list() == list(range(ROWS))
    assert loaded.drop(ROW).schema == expected.schema
    assert loaded.drop(ROW).equals(expected)
    assert loaded["region"].null_count() == ROWS // 5
    assert loaded["empty"].null_count() == ROWS


def test_views_of_a_sliced_dictionary_keep_their_nulls() -> None:
    """A slice's codes and validity bits stay aligned when its views are gathered."""
    values = ["x", None, "a value longer than twelve bytes", "x", None, "zz"]
    coded = pa.array(values).dictionary_encode()

    views = read._views(coded.slice(1, 4))

    assert views.type == pa.string_view()
    assert views.to_pylist() == [None, "a value longer than twelve bytes", "x", None]


def test_a_dictionary_holding_null_keeps_it_null() -> None:
    """A null entry in the dictionary itself (Arrow allows one) still reads as null."""
    coded = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0]), pa.array(["a", None]))

    assert read._views(coded).to_pylist() == ["a", None, "a"]
