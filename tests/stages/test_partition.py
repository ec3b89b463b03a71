"""Partitions cover every row of a file exactly once, and know their rows' line or row numbers."""

from __future__ import annotations

import csv
import io
import itertools
import pickle
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.config import CsvOptions
from ingest.stages import partition, read
from ingest.stages.csvread import ROW
from ingest.stages.plan import Plan

PLAN = Plan("lazy", 0, 0, 0.0, 1_000, 0, 1, False, "test", chunk_bytes=4_096)
SCHEMA: dict[str, pl.DataType] = {"id": pl.Int64(), "text": pl.String()}


def _expected(path: Path) -> list[tuple[int, str]]:
    """Each record's id and the line it starts on, as Python's csv module reads the file."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        next(reader)
        rows, line = [], reader.line_num + 1
        for record in reader:
            rows.append((line, record[0]))
            line = reader.line_num + 1
    return rows


def _loaded(parts: list[partition.Partition]) -> list[tuple[int, str]]:
    got: list[tuple[int, str]] = []
    for part in parts:
        for chunk in read.batches(part, CsvOptions(), SCHEMA, PLAN):
            pairs = zip(chunk.frame[ROW], chunk.frame["id"], strict=True)
            got += [(int(r), str(i)) for r, i in pairs]
    return got


def _write_csv(path: Path, rows: int, newline: str, bom: bool, last_newline: bool) -> None:
    out = io.StringIO()
    out.write(("\ufeff" if bom else "") + "id,text" + newline)
    for i in range(rows):
        text = f'"two{newline}lines, ""{i}"""' if i % 7 == 0 else f"plain {i}"
        out.write(f"{i},{text}{newline}")
    body = out.getvalue()
    path.write_bytes((body if last_newline else body.rstrip(newline)).encode())


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("last_newline", [True, False])
def test_csv_partitions_cover_each_record_once(
    tmp_path: Path, newline: str, bom: bool, last_newline: bool
) -> None:
    path = tmp_path / "q.csv"
    _write_csv(path, 3_000, newline, bom, last_newline)
    expected = _expected(path)
    for target in (100, 1_000, 7_777, 1 << 30):
        parts = partition.csv_partitions(path, has_header=True, target_bytes=target)
        assert _loaded(parts) == expected, target
        # They tile the body of the file: no gap, no overlap, each cut at a record's end.
        assert [p.index for p in parts] == list(range(len(parts)))
        assert parts[-1].stop == path.stat().st_size
        for before, after in itertools.pairwise(parts):
            assert before.stop == after.start
        if target == 100:
            assert len(parts) > 50


def test_a_quoted_newline_never_straddles_two_partitions(tmp_path: Path) -> None:
    """A field spanning many lines sits wholly in one partition, whatever the target size."""
    path = tmp_path / "long.csv"
    long = "\n".join(f"line {k}" for k in range(500))
    path.write_text("id,text\n" + "".join(f'{i},"{long}"\n' for i in range(20)))
    parts = partition.csv_partitions(path, has_header=True, target_bytes=64)
    assert _loaded(parts) == _expected(path)
    assert [p.first for p in parts][:3] == [2, 502, 1002]  # 500 lines a record


def test_a_small_csv_is_one_partition_and_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("id,text\n1,a\n2,b\n")
    (part,) = partition.csv_partitions(path, has_header=True)
    assert (part.start, part.stop, part.first) == (len("id,text\n"), path.stat().st_size, 2)


def _write_parquet(path: Path, groups: list[int]) -> None:
    with pq.ParquetWriter(path, pa.schema([("id", pa.int64())])) as writer:
        first = 0
        for size in groups:
            writer.write_table(pa.table({"id": list(range(first, first + size))}))
            first += size


@pytest.mark.parametrize(
    ("groups", "target", "cuts"),
    [
        ([10] * 20, 35, [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20)]),
        ([10] * 20, 1_000, [(0, 20)]),
        ([5, 200_000, 5], 100, [(0, 2), (2, 3)]),  # a huge row group is never split
        ([250_000], 10, [(0, 1)]),
    ],
)
def test_parquet_partitions_gather_row_groups(
    tmp_path: Path, groups: list[int], target: int, cuts: list[tuple[int, int]]
) -> None:
    path = tmp_path / "g.parquet"
    _write_parquet(path, groups)
    parts = partition.parquet_partitions(path, target_rows=target)
    assert [(p.start, p.stop) for p in parts] == cuts
    assert sum(p.rows or 0 for p in parts) == sum(groups)
    ids, rows = [], []
    for part in parts:
        for chunk in read.batches(part, CsvOptions(), {"id": pl.Int64()}, PLAN):
            ids += chunk.frame["id"].to_list()
            rows += chunk.frame[ROW].to_list()
    # Every row once, in order; a row's locator is its index in the file.
    assert ids == list(range(sum(groups))) == rows


def test_partitions_are_small_picklable_values(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    _write_csv(path, 200, "\n", False, True)
    parts = partition.plan_partitions([path, path], "csv", True, csv_bytes=500)
    assert pickle.loads(pickle.dumps(parts)) == parts
    assert len({p.key for p in parts}) == len(parts)
    assert [p.index for p in parts] == list(range(len(parts)))
