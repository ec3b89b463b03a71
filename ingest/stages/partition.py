"""Cut a load into partitions: independent pieces of its files, each loaded by one task.

A partition is a small frozen value (no connection, no callables), so it can be pickled to
another process and named in a ledger. Between them, a load's partitions cover every row of
its files exactly once, in file order, and each knows the locator of its first row: the
1-based line a CSV record starts on, or a Parquet row's 0-based index in its file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ingest.stages import csvpieces
from ingest.stages.remote import Location, open_binary, open_parquet, size_of

# Rows a Parquet partition gathers from consecutive row groups before it is cut.
PARQUET_PARTITION_ROWS = 4_000_000
# Bytes a CSV partition spans before it is cut at the next record end.
CSV_PARTITION_BYTES = 256 << 20

Kind = Literal["row_groups", "bytes", "whole"]


@dataclass(frozen=True)
class Partition:
    """One independent piece of a load.

    Attributes:
        path: the file it reads.
        format: `csv`, `parquet`, `jsonl` or `arrow`.
        index: its place among the load's partitions, from 0.
        kind: `row_groups` (Parquet: groups `start` up to `stop`), `bytes` (CSV: the byte
            range `start` up to `stop`, starting and ending on a record boundary) or `whole`
            (a compressed stream, JSON lines or Arrow IPC: the whole file, read front to back).
        start: first row group, or byte offset of the first record.
        stop: row group or byte offset just past the end.
        first: the locator of its first row: CSV line (1-based), Parquet row index (0-based).
        rows: its rows when the file's metadata says (Parquet), else None.
    """

    path: Location
    format: str
    index: int
    kind: Kind
    start: int
    stop: int
    first: int
    rows: int | None = None
    compression: str = "none"  # gzip or zstd: the text is decompressed as one stream

    @property
    def key(self) -> str:
        """A name for it that is the same whenever the same file is cut the same way."""
        return f"{self.index}:{self.path.name}:{self.start}-{self.stop}"


def parquet_partitions(
    path: Location, index: int = 0, target_rows: int = PARQUET_PARTITION_ROWS
) -> list[Partition]:
    """Consecutive row groups gathered into partitions of about `target_rows` rows.

    A row group is never split: one larger than `target_rows` is a partition of its own (the
    reader still decodes it in batches).
    """
    meta = open_parquet(path).metadata
    parts: list[Partition] = []
    start, first, rows = 0, 0, 0
    for group in range(meta.num_row_groups):
        rows += meta.row_group(group).num_rows
        if rows >= target_rows or group == meta.num_row_groups - 1:
            parts.append(
                Partition(
                    path, "parquet", index + len(parts), "row_groups", start, group + 1, first, rows
                )
            )
            start, first, rows = group + 1, first + rows, 0
    if not parts:  # no row groups at all: one empty partition keeps the file in the load
        parts.append(Partition(path, "parquet", index, "row_groups", 0, 0, 0, 0))
    return parts


def csv_partitions(
    path: Location,
    has_header: bool,
    index: int = 0,
    target_bytes: int = CSV_PARTITION_BYTES,
    quote: bytes = b'"',
) -> list[Partition]:
    """Record-aligned byte ranges of about `target_bytes`, each with the line it starts on.

    A file no larger than `target_bytes` is one partition and is not read here. A larger one is
    scanned once for record ends (quote parity, as the reader finds them), so a quoted field
    spanning lines never straddles two partitions.
    """
    size = size_of(path)
    start, line = _body_start(path, has_header)
    if size - start <= target_bytes:
        return [Partition(path, "csv", index, "bytes", start, size, line)]
    parts: list[Partition] = []
    first, first_line = start, line
    for piece in csvpieces.pieces(path, min(csvpieces.SCAN_BYTES, target_bytes), quote, has_header):
        end = piece.offset + piece.length
        if end - first >= target_bytes or end >= size:
            parts.append(
                Partition(path, "csv", index + len(parts), "bytes", first, end, first_line)
            )
            first, first_line = end, piece.line + piece.newlines
    if first < size:  # a last piece the scan cut short of the end (cannot happen; be exact)
        parts.append(Partition(path, "csv", index + len(parts), "bytes", first, size, first_line))
    return parts


def one_stream(
    path: Location, fmt: str, has_header: bool, compression: str, index: int = 0
) -> Partition:
    """The whole file as one partition that reads it front to back: compressed text (which
    cannot be entered mid-way), JSON lines, or Arrow IPC (its batches, in order)."""
    first = 0 if fmt == "arrow" else (2 if has_header and fmt == "csv" else 1)
    return Partition(path, fmt, index, "whole", 0, size_of(path), first, compression=compression)


def plan_partitions(
    paths: list[Location],
    fmt: str,
    has_header: bool,
    *,
    csv_bytes: int = CSV_PARTITION_BYTES,
    parquet_rows: int = PARQUET_PARTITION_ROWS,
    compression: str = "none",
) -> list[Partition]:
    """Every file's partitions, numbered across the files in order."""
    parts: list[Partition] = []
    for path in paths:
        if fmt in ("jsonl", "arrow") or compression != "none":
            parts.append(one_stream(path, fmt, has_header, compression, len(parts)))
        elif fmt == "parquet":
            parts += parquet_partitions(path, len(parts), parquet_rows)
        else:
            parts += csv_partitions(path, has_header, len(parts), csv_bytes)
    return parts


def _body_start(path: Location, has_header: bool) -> tuple[int, int]:
    """The byte offset and 1-based line of a CSV file's first record."""
    if not has_header:
        return 0, 1
    with open_binary(path) as fh:
        header = fh.readline()
    return len(header), 2
