"""Arrow IPC files (Feather v2) and streams: profiled from a few record batches, read by batch.

A file within the budget is memory-mapped: its batches are read in place, without a copy. The
mapped pages count in the process's RSS once touched and stay there while the map is open, so
a file the plan streams (larger than the budget) is read batch by batch into memory instead,
each batch freed after its COPY.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc

from ingest.errors import BadColumnName, SourceFileError
from ingest.stages.csvread import Chunk, numbered
from ingest.stages.fileprofile import ColumnProfile, FileProfile, fixed_width, widths
from ingest.stages.types import empty_frame, polars_readable

_FILE_MAGIC = b"ARROW1"
_PICKS = 5


def _is_file(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(6) == _FILE_MAGIC


def _damaged(path: Path, where: str, exc: Exception) -> SourceFileError:
    return SourceFileError(
        path,
        f"not a readable Arrow IPC file ({where}: {exc})",
        "write the file again (pyarrow.feather.write_feather, or an IPC file or stream writer)",
    )


@contextmanager
def _source(path: Path, mapped: bool) -> Iterator[pa.NativeFile]:
    source = pa.memory_map(str(path)) if mapped else pa.OSFile(str(path))
    try:
        yield source
    finally:
        source.close()


def record_batches(path: Path, *, mapped: bool = True) -> Iterator[pa.RecordBatch]:
    """The file's record batches in order, from a memory map or read one by one.

    Raises:
        SourceFileError: the file or one of its batches cannot be read; the message names which.
    """
    with _source(path, mapped) as source:
        number = 0
        try:
            if _is_file(path):
                reader = ipc.open_file(source)
                for number in range(reader.num_record_batches):
                    yield reader.get_batch(number)
            else:
                stream = ipc.open_stream(source)
                while True:
                    try:
                        batch = stream.read_next_batch()
                    except StopIteration:
                        return
                    yield batch
                    number += 1
        except (OSError, pa.ArrowException) as exc:
            raise _damaged(path, f"record batch {number} (counted from 0)", exc) from None


def _frame(batch: pa.RecordBatch | pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(polars_readable(batch))
    assert isinstance(frame, pl.DataFrame)
    return frame


def profile_arrow(path: Path, n_rows_sample: int) -> FileProfile:
    """Rows from the batches' headers, types from the schema, widths from a few spread batches.

    Raises:
        SourceFileError: the file cannot be read as Arrow IPC.
    """
    counts: list[int] = []
    picked: dict[int, pl.DataFrame] = {}
    try:
        with _source(path, mapped=True) as source:
            if _is_file(path):
                reader = ipc.open_file(source)
                schema, total = reader.schema, reader.num_record_batches
                counts = [reader.get_batch(i).num_rows for i in range(total)]
            else:
                stream = ipc.open_stream(source)
                schema = stream.schema
                counts = [batch.num_rows for batch in stream]
    except (OSError, pa.ArrowException) as exc:
        raise _damaged(path, "its schema or batch headers", exc) from None
    seen: set[str] = set()
    for name in schema.names:
        if name in seen:  # polars would refuse the whole frame without naming the file
            raise BadColumnName(path, name, "appears twice in the file's schema")
        seen.add(name)
    # Mapped batches are zero-copy: reading the headers touches little of the file.
    chosen = sorted({i * len(counts) // _PICKS for i in range(min(_PICKS, len(counts)))})
    per_pick = max(n_rows_sample // max(len(chosen), 1), 1)
    for number, batch in enumerate(record_batches(path)):
        if number in chosen:
            picked[number] = _frame(batch.slice(0, per_pick))
        if number >= (chosen[-1] if chosen else 0):
            break
    empty = empty_frame(schema)
    sample = pl.concat(list(picked.values())) if picked else empty
    sizes = widths(sample) if sample.height else {}
    columns = tuple(
        ColumnProfile(name, dtype, sizes.get(name, fixed_width(dtype)))
        for name, dtype in empty.schema.items()
    )
    return FileProfile(
        path=path,
        format="arrow",
        file_bytes=path.stat().st_size,
        rows=sum(counts),
        rows_exact=True,
        columns=columns,
        sample=sample,
        row_groups=max(len(counts), 1),
    )


def read_arrow(path: Path, batch_rows: int, *, mapped: bool) -> Iterator[Chunk]:
    """The file's rows in slices of at most `batch_rows`, each numbered from the file's row 0."""
    offset = 0
    for batch in record_batches(path, mapped=mapped):
        # Sliced before it becomes a polars frame (which copies text into string views), so a
        # writer's big batch is held once, not twice: a 30 MB batch had a 300MB load peak at 307.
        for start in range(0, batch.num_rows, batch_rows):
            part = _frame(batch.slice(start, batch_rows))
            yield Chunk(numbered(part, offset), offset, offset, False)
            offset += part.height
