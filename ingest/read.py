"""Hand out a file's rows in batches the way the plan says, each with its file row index."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from ingest import csvread
from ingest.config import CsvOptions
from ingest.csvread import ROW, Chunk
from ingest.plan import Plan

# A row group up to this many batches is decoded whole; a larger one batch by batch.
GROUP_BATCHES = 1


def batches(
    path: Path, fmt: str, csv: CsvOptions, schema: dict[str, pl.DataType], plan: Plan
) -> Iterator[Chunk]:
    """Batches of about `plan.batch_rows` rows in file order, each with a `__row` column.

    eager reads the whole file into one frame and slices it. lazy and streaming read pieces:
    Parquet row group by row group, CSV in record-aligned byte chunks, so only the batches in
    flight are in memory.
    """
    if fmt == "parquet":
        yield from _parquet(path, plan)
    elif plan.strategy == "eager":
        yield from _csv_whole(path, csv, schema, plan)
    else:
        yield from csvread.read_chunks(path, list(schema), schema, csv, plan.chunk_bytes)


def _slices(frame: pl.DataFrame, rows: int) -> Iterator[Chunk]:
    for offset in range(0, frame.height, rows):
        piece = frame.slice(offset, rows)
        yield Chunk(piece, offset, offset + 2, as_text=False)


def _parquet(path: Path, plan: Plan) -> Iterator[Chunk]:
    if plan.strategy == "eager":
        whole = pl.read_parquet(path)
        whole = whole.with_columns(pl.int_range(0, whole.height, dtype=pl.Int64).alias(ROW))
        yield from _slices(whole, plan.batch_rows)
        return
    # Pull row groups one at a time: polars' streaming engine decodes ahead of a slow consumer
    # (the COPY), and its buffer grows with the file; pyarrow reads only what is asked for.
    # Pre-buffering reads far ahead; a 1 MiB read buffer keeps whole column chunks out of memory.
    source = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    # Decoding threads each keep their own buffers: streaming decodes on this thread only.
    threads = plan.strategy != "streaming"
    meta = source.metadata
    group_limit = plan.batch_rows * GROUP_BATCHES
    offset = 0
    for group in range(meta.num_row_groups):
        if meta.row_group(group).num_rows <= group_limit:
            # A whole row group decodes at half the CPU of iter_batches' small reads.
            pieces = [source.read_row_group(group, use_threads=threads)]
        else:  # a huge row group is read in batches, so memory stays bounded
            pieces = source.iter_batches(plan.batch_rows, row_groups=[group], use_threads=threads)
        for piece in pieces:
            frame = pl.from_arrow(piece)
            assert isinstance(frame, pl.DataFrame)
            for part in frame.iter_slices(plan.batch_rows):
                rows = pl.int_range(offset, offset + part.height, dtype=pl.Int64)
                yield Chunk(part.with_columns(rows.alias(ROW)), offset, offset, False)
                offset += part.height


def _csv_whole(
    path: Path, csv: CsvOptions, schema: dict[str, pl.DataType], plan: Plan
) -> Iterator[Chunk]:
    try:
        whole = pl.read_csv(
            path,
            schema=schema,
            has_header=csv.has_header,
            separator=csv.separator,
            null_values=csv.null_values or None,
            encoding=csv.encoding,
            truncate_ragged_lines=False,
        )
    except pl.exceptions.PolarsError:
        # A late surprise the sample missed: go chunk by chunk, text where the types fail.
        yield from csvread.read_chunks(path, list(schema), schema, csv, plan.chunk_bytes)
        return
    whole = whole.with_columns(pl.int_range(0, whole.height, dtype=pl.Int64).alias(ROW))
    yield from _slices(whole, plan.batch_rows)
