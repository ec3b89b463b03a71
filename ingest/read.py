"""Hand out a file's rows in batches the way the plan says, each with its file row index."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from ingest import csvread
from ingest.config import CsvOptions
from ingest.csvread import ROW, Chunk
from ingest.plan import Plan

# Batches read ahead of the load: eager without bound (the whole file may sit in memory);
# lazy and streaming none, the reader waits for the load (a read-ahead batch measured ~25 MB
# over a 400 MB budget).
READ_AHEAD = {"eager": 0, "lazy": -1, "streaming": -1}
_END = object()


def batches(
    path: Path, fmt: str, csv: CsvOptions, schema: dict[str, pl.DataType], plan: Plan
) -> Iterator[Chunk]:
    """Batches of about `plan.batch_rows` rows in file order, each with a `__row` column.

    Parquet is read row group by row group, CSV in record-aligned byte chunks. eager reads on a
    background thread ahead of the load, without bound, so reading overlaps the COPY; lazy and
    streaming read only when the load asks, decoding on one thread, so memory stays bounded.
    """
    if fmt == "parquet":
        source = _parquet(path, plan)
    else:
        source = csvread.read_chunks(path, list(schema), schema, csv, plan.chunk_bytes)
    ahead = READ_AHEAD[plan.strategy]
    return source if ahead < 0 else _read_ahead(source, ahead)


def _parquet(path: Path, plan: Plan) -> Iterator[Chunk]:
    # pyarrow reads only what is asked for (polars' streaming engine decodes ahead of a slow
    # consumer without bound); no pre-buffering, and a 1 MiB read buffer instead of whole chunks.
    source = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    threads = plan.strategy == "eager"
    # Decoding threads each keep their own buffers: only eager, with memory to spare, uses them.
    # eager may decode a row group of up to 4 batches at once; the others one batch's worth.
    group_limit = plan.batch_rows * (4 if plan.strategy == "eager" else 1)
    meta = source.metadata
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


def _read_ahead(source: Iterator[Chunk], depth: int) -> Iterator[Chunk]:
    """Run `source` on a thread, `depth` batches ahead (0: unbounded); errors surface here."""
    ready: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in source:
                while not stop.is_set():
                    try:
                        ready.put(chunk, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            ready.put(exc)

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, Chunk)
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                ready.get_nowait()
            except queue.Empty:
                thread.join(0.05)
