"""CSV chunks end on record boundaries, survive late surprises, and locate broken lines."""

from __future__ import annotations

import itertools
from pathlib import Path

import polars as pl
import pytest

from ingest.config import CsvOptions
from ingest.errors import SourceFileError
from ingest.stages.csvpieces import pieces
from ingest.stages.csvread import ROW, read_chunks
from ingest.stages.rejects import REJECTS_SCHEMA


def test_chunks_never_split_a_quoted_newline(tmp_path: Path) -> None:
    """A newline inside quotes stays inside its record, whatever the chunk size."""
    path = tmp_path / "q.csv"
    rows = [f'{i},"line one\nline ""two"" {i}"\n' for i in range(200)]
    path.write_text("id,text\n" + "".join(rows))
    for size in (7, 50, 333, 10_000):
        found = [p.data for p in pieces(path, size, b'"', True)]
        assert b"".join(found).decode() == "".join(rows)
        assert all(p.count(b'"') % 2 == 0 for p in found)


def test_line_numbers_follow_the_file(tmp_path: Path) -> None:
    """Each chunk knows the 1-based line it starts on (the header is line 1)."""
    path = tmp_path / "n.csv"
    path.write_text("a\n" + "".join(f"{i}\n" for i in range(100)))
    starts = [(p.line, p.data.count(b"\n")) for p in pieces(path, 40, b'"', True)]
    assert starts[0][0] == 2
    for (line, count), (next_line, _) in itertools.pairwise(starts):
        assert next_line == line + count


def test_a_late_surprise_is_parsed_as_text(tmp_path: Path) -> None:
    """A chunk whose values break the profiled type is re-read as text, with line numbers."""
    path = tmp_path / "late.csv"
    path.write_text("id,v\n" + "".join(f"{i},{i}\n" for i in range(1000)) + "1000,x1.5\n")
    chunks = list(
        read_chunks(path, ["id", "v"], {"id": pl.Int64(), "v": pl.Int64()}, CsvOptions(), 2_000)
    )
    assert sum(c.frame.height for c in chunks) == 1001
    assert chunks[0].as_text is False and chunks[-1].as_text is True
    assert chunks[-1].frame.schema["v"] == pl.String
    assert chunks[-1].frame[ROW][-1] == 1002
    assert pl.concat([c.frame.select(ROW) for c in chunks])[ROW].to_list() == list(range(2, 1003))


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"1,2\n3,4,5\n", "line 3: 3 fields where the header has 2"),
        (b"1,2\n3,\xff\xfe\n", "line 3: bytes that are not UTF-8"),
    ],
)
def test_structural_errors_name_the_line(tmp_path: Path, body: bytes, fragment: str) -> None:
    """Ragged rows and undecodable bytes raise an error naming the file and the line."""
    path = tmp_path / "bad.csv"
    path.write_bytes(b"a,b\n" + body)
    schema = {"a": pl.Int64(), "b": pl.Int64()}
    with pytest.raises(SourceFileError, match=fragment) as info:
        list(read_chunks(path, ["a", "b"], schema, CsvOptions(), 1 << 20))
    assert str(path) in str(info.value)


def test_lossy_encoding_reads_bad_bytes(tmp_path: Path) -> None:
    """With utf8-lossy, undecodable bytes become replacement characters instead of an error."""
    path = tmp_path / "lossy.csv"
    path.write_bytes(b"a,b\n1,caf\xe9\n")
    chunks = list(
        read_chunks(
            path,
            ["a", "b"],
            {"a": pl.Int64(), "b": pl.String()},
            CsvOptions(encoding="utf8-lossy"),
            1 << 20,
        )
    )
    assert chunks[0].frame["b"][0] == "caf\ufffd"


QUARANTINE = CsvOptions(ragged_rows="quarantine")


@pytest.mark.parametrize(
    ("body", "kept", "aside"),
    [
        (b"1,a\n2\n3,c\n", [2, 4], [(3, "1 fields where the header has 2", '["2"]')]),
        (b"1,a\n2,b,x\n3,c\n", [2, 4], [(3, "3 fields where the header has 2", '["2", "b", "x"]')]),
        (
            b'1,a\n\n2\n3,"q,\nr",z\n4,d\n',
            [2, 7],
            [
                (4, "1 fields where the header has 2", '["2"]'),
                (5, "3 fields where the header has 2", '["3", "q,\\nr", "z"]'),
            ],
        ),
    ],
    ids=["short", "long", "blank, short and quoted long"],
)
def test_ragged_rows_are_set_aside_by_line_when_asked(
    tmp_path: Path, body: bytes, kept: list[int], aside: list[tuple[int, str, str]]
) -> None:
    """Under ragged_rows: quarantine a ragged row is a ragged_row reject naming its line."""
    path = tmp_path / "r.csv"
    path.write_bytes(b"id,v\n" + body)
    schema: dict[str, pl.DataType] = {"id": pl.Int64(), "v": pl.String()}
    chunks = list(read_chunks(path, ["id", "v"], schema, QUARANTINE, 1 << 20))
    frame = pl.concat([c.frame for c in chunks])
    rejects = pl.concat([c.rejects for c in chunks if c.rejects is not None])
    assert frame[ROW].to_list() == kept
    assert frame.schema["id"] == pl.Int64  # the good rows keep their types
    assert rejects.select(ROW, "reason", "raw").rows() == aside
    assert set(rejects["rule"]) == {"ragged_row"} and set(rejects["column"]) == {""}
    assert rejects.schema == REJECTS_SCHEMA  # what the batch's own rejects are


def test_ragged_rows_in_a_late_chunk_are_set_aside_there(tmp_path: Path) -> None:
    """A short row 5,000 lines in, in a small chunk of its own, is named by its line."""
    path = tmp_path / "late.csv"
    path.write_bytes(b"id,v\n" + b"".join(b"%d,x\n" % i for i in range(5000)) + b"9\n7,y\n")
    schema: dict[str, pl.DataType] = {"id": pl.Int64(), "v": pl.String()}
    chunks = list(read_chunks(path, ["id", "v"], schema, QUARANTINE, 4_000))
    assert sum(c.frame.height for c in chunks) == 5001
    aside = [r for c in chunks if c.rejects is not None for r in c.rejects[ROW].to_list()]
    assert aside == [5002]


def test_ragged_rows_are_refused_by_default(tmp_path: Path) -> None:
    """The default stays refuse: the first ragged line is a SourceFileError naming it."""
    path = tmp_path / "r.csv"
    path.write_bytes(b"id,v\n1,a\n2,b,x\n")
    with pytest.raises(SourceFileError, match="line 3: 3 fields where the header has 2"):
        list(
            read_chunks(
                path, ["id", "v"], {"id": pl.Int64(), "v": pl.String()}, CsvOptions(), 1 << 20
            )
        )
