"""Look at a file without loading it: rows, bytes, and the in-memory width of every column."""

from __future__ import annotations

import csv as csvlib
import io
import re

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.config import CsvOptions
from ingest.errors import (
    BadColumnName,
    DamagedParquet,
    SeparatorMismatch,
    SourceFileError,
    UnsupportedColumnType,
)
from ingest.stages import arrowipc, formats, jsonl
from ingest.stages.csvpieces import record_end
from ingest.stages.csvread import locate_problem
from ingest.stages.fileprofile import ColumnProfile, FileProfile, fixed_width, widths
from ingest.stages.remote import Location, RemoteFile, is_file, open_binary, open_parquet, size_of
from ingest.stages.stream import Input, TextStream
from ingest.stages.types import POLARS_MAX_PRECISION, empty_frame, polars_readable

__all__ = ["ColumnProfile", "FileProfile", "check_separator", "detect_format", "profile_file"]

_CSV_SAMPLE_SPANS = 10
_CSV_SMALL_FILE = 8 << 20
_CSV_HEAD = 4 << 20


def detect_format(path: Location, declared: str) -> str:
    """`csv`, `parquet`, `jsonl` or `arrow`: what the file's content is (see `formats.detect`).

    Raises:
        SourceFileError: its content contradicts its name or the config's `format`, or it is
            compressed in a way not read here.
    """
    return formats.detect(path, declared).format


def profile_file(
    path: Location, fmt: str, n_rows_sample: int, csv: CsvOptions, compression: str = "none"
) -> FileProfile:
    """Profile a file from its metadata and a sample spread through it (a compressed file's
    sample comes from the head of its text).

    Raises:
        SourceFileError: the file is missing, empty, or cannot be parsed.
    """
    if not is_file(path):
        raise SourceFileError(path, "no such file", "check path.input_path in the config")
    if size_of(path) == 0:
        raise SourceFileError(path, "the file is empty", "export the data again")
    if fmt == "parquet":
        return _profile_parquet(path, n_rows_sample)
    if fmt == "arrow":
        if isinstance(path, RemoteFile):
            raise SourceFileError(
                path, "Arrow IPC is read from local files only", "copy the file here first"
            )
        return arrowipc.profile_arrow(path, n_rows_sample)
    text = Input(path, compression)
    if fmt == "jsonl":
        return jsonl.profile_jsonl(text, n_rows_sample)
    check_separator(path, csv, text)
    return _profile_csv(text, n_rows_sample, csv)


_SEPARATORS = ("\t", ";", "|", ",")
_SNIFF_LINES = 5


def check_separator(path: Location, csv: CsvOptions, text: Input | None = None) -> None:
    """Refuse a file whose first lines lack the separator but all have as many of another one.

    Without this a tab-separated file read with `,` loads as one text column and exits 0. A
    separator the config sets explicitly is trusted as it is.

    Raises:
        SeparatorMismatch: naming the separator found and the setting that reads it.
    """
    if "separator" in csv.model_fields_set:
        return
    with (text or Input(path)).open() as fh:
        head = fh.read(1 << 16)
    lines = head.decode("utf-8", errors="replace").splitlines()
    if len(lines) > 1 and not head.endswith((b"\n", b"\r")):
        lines.pop()  # cut off mid-line by the read
    lines = [line for line in lines[:_SNIFF_LINES] if line]
    if not lines or csv.separator in lines[0]:
        return
    for other in _SEPARATORS:
        counts = {line.count(other) for line in lines}
        if other != csv.separator and len(counts) == 1 and (count := counts.pop()) > 0:
            raise SeparatorMismatch(path, csv.separator, other, count, len(lines))


def _profile_parquet(path: Location, n_rows_sample: int) -> FileProfile:
    try:
        # A small read buffer: without one, a sample of 200 rows reads whole column chunks
        # (~20 MB of a 1M-row group) and the allocator keeps that memory for the whole load.
        meta = (
            # Remotely each read is a request: a few coalesced ones per sampled row group.
            open_parquet(path)
            if isinstance(path, RemoteFile)
            else pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 16)
        )
    except SourceFileError:
        raise
    except Exception as exc:  # pyarrow raises several types for a damaged footer
        raise SourceFileError(path, f"not a readable Parquet file ({exc})") from None
    seen: set[str] = set()
    for name in meta.schema_arrow.names:
        if name in seen:  # polars would refuse the whole frame without naming the file
            raise BadColumnName(path, name, "appears twice in the file's schema")
        seen.add(name)
    for item in meta.schema_arrow:
        kind = item.type
        if pa.types.is_decimal256(kind) and kind.precision > POLARS_MAX_PRECISION:
            raise UnsupportedColumnType(
                path,
                item.name,
                str(kind),
                f"polars, which reads the file, holds decimals of up to {POLARS_MAX_PRECISION} "
                "digits",
                f"cast the column in the file to decimal({POLARS_MAX_PRECISION}, {kind.scale}) "
                "or narrower if its values fit, or to text",
            )
    md = meta.metadata
    footer: dict[str, int] = {}
    for g in range(md.num_row_groups):
        group = md.row_group(g)
        for c in range(group.num_columns):
            col = group.column(c)
            top = col.path_in_schema.split(".")[0]
            footer[top] = footer.get(top, 0) + int(col.total_uncompressed_size)
    # Read a few slices spread over the row groups: strings vary, the footer undercounts them.
    groups = list(range(md.num_row_groups))
    picks = sorted({groups[i * len(groups) // 5] for i in range(min(5, len(groups)))})
    per_pick = max(n_rows_sample // max(len(picks), 1), 1)
    parts: list[pl.DataFrame] = []
    for g in picks:
        try:
            batch = next(meta.iter_batches(batch_size=per_pick, row_groups=[g]), None)
        except (OSError, pa.ArrowException) as exc:
            raise DamagedParquet(path, g, md.num_row_groups, exc) from None
        if batch is not None:
            part = pl.from_arrow(polars_readable(batch))
            assert isinstance(part, pl.DataFrame)
            parts.append(part)
    schema = _parquet_schema(path, meta.schema_arrow)
    sample = pl.concat(parts) if parts else pl.DataFrame(schema=schema)
    sizes = widths(sample) if sample.height else {}
    columns = tuple(
        ColumnProfile(
            name=name,
            dtype=dtype,
            bytes_per_row=sizes.get(name, fixed_width(dtype)),
            footer_bytes=footer.get(name),
        )
        for name, dtype in schema.items()
    )
    return FileProfile(
        path=path,
        format="parquet",
        file_bytes=size_of(path),
        rows=md.num_rows,
        rows_exact=True,
        columns=columns,
        sample=sample,
        row_groups=max(md.num_row_groups, 1),
    )


def _parquet_schema(path: Location, arrow: pa.Schema) -> dict[str, pl.DataType]:
    """The file's polars schema; a remote one's from the footer already read, not another read."""
    if not isinstance(path, RemoteFile):
        return dict(pl.read_parquet_schema(path))
    return dict(empty_frame(arrow).schema)


def _csv_sample_text(path: Location, n_rows_sample: int) -> tuple[bytes, int, float]:
    """Header plus lines from spans spread through the file, lines taken and their mean size.

    A file under 8 MB is returned whole, with -1 lines, meaning the sample is the file.
    """
    size = size_of(path)
    with open_binary(path) as fh:
        header = fh.readline()
        if size <= _CSV_SMALL_FILE:  # small enough to read whole: exact rows and types
            body = fh.read()
            return header + body, -1, 0.0
        per_span = max(n_rows_sample // _CSV_SAMPLE_SPANS, 1)
        chunks: list[bytes] = []
        total_len = 0
        total_lines = 0
        for i in range(_CSV_SAMPLE_SPANS):
            start = len(header) + (size - len(header)) * i // _CSV_SAMPLE_SPANS
            fh.seek(start)
            if i:
                fh.readline()  # skip to a line start
            span = []
            for _ in range(per_span):
                line = fh.readline()
                if not line:
                    break
                span.append(line)
            chunks.extend(span)
            total_len += sum(len(x) for x in span)
            total_lines += len(span)
        if chunks and not chunks[-1].endswith(b"\n"):
            chunks[-1] += b"\n"
        mean = total_len / max(total_lines, 1)
        return header + b"".join(chunks), total_lines, mean


def _header(text: Input, csv: CsvOptions) -> list[str] | None:
    """The header's names as a CSV reader reads them (`"na""me"` is `na"me`), checked.

    polars keeps a header's doubled quotes as they are; the names come from Python's CSV reader
    instead, and duplicate or empty names are refused before anything would rename them.
    """
    if not csv.has_header:
        return None
    path = text.path
    with text.open() as fh:
        # utf-8-sig: a byte-order mark is not part of the first name (polars drops it too)
        first = fh.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n")
    names = next(csvlib.reader([first], delimiter=csv.separator), [])
    seen: set[str] = set()
    for name in names:
        if not name.strip():
            raise BadColumnName(path, name, "in the header is empty")
        if name in seen:
            raise BadColumnName(path, name, "appears twice in the header")
        seen.add(name)
    return names


def _read_sample(
    text: bytes, csv: CsvOptions, names: list[str] | None, **types: object
) -> pl.DataFrame:
    body = text[text.index(b"\n") + 1 :] if names is not None and b"\n" in text else text
    if names is not None and b"\n" not in text:
        body = b""
    # Empty lines hold no record (the reader skips them); polars would read each as nulls.
    body = _EMPTY_LINES.sub(b"\n", body).lstrip(b"\r\n")
    frame = pl.read_csv(
        io.BytesIO(body),
        separator=csv.separator,
        has_header=False,
        new_columns=names,
        null_values=csv.null_values or None,
        encoding=csv.encoding,
        raise_if_empty=False,
        **(_LENIENT | types if csv.ragged_rows == "quarantine" else types),  # type: ignore[arg-type]
    )
    if names is not None and frame.width < len(names):  # an empty body: the header's columns
        frame = pl.DataFrame(schema=dict.fromkeys(names, pl.String()))
    return frame


# Rows the reader will set aside (csv.ragged_rows: quarantine) must not stop the sample.
_LENIENT: dict[str, object] = {"truncate_ragged_lines": True, "extra_columns": "ignore"}
_LEADING_ZERO = r"^[+-]?0[0-9]"
_EMPTY_LINES = re.compile(rb"\n(?:\r?\n)+")


def _typed(sample: pl.DataFrame, text: pl.DataFrame) -> pl.DataFrame:
    """The sample with guesses that would change values undone.

    Numbers written with a leading zero (zip codes, account numbers: `00501`) stay text, since
    an integer prints back without the zero. Integers too wide for int64 are read as numeric
    (decimal(38,0)), which PostgreSQL stores exactly, instead of a type it has no column for.
    """
    fixes: list[pl.Series] = []
    for name, dtype in sample.schema.items():
        if dtype.is_numeric() and text[name].str.contains(_LEADING_ZERO).any():
            fixes.append(text[name])
        elif dtype in (pl.Int128(), pl.UInt64(), pl.UInt128()):
            fixes.append(text[name].cast(pl.Decimal(38, 0), strict=False))
    return sample.with_columns(fixes) if fixes else sample


def _csv_head_text(text: Input, csv: CsvOptions) -> tuple[bytes, bool, float]:
    """The header and the records of the text's first 4 MB, whether that is the whole text, and
    the text's bytes per stored byte so far (the compression ratio; 1 for a plain file)."""
    with text.open() as fh:
        header = fh.readline() if csv.has_header else b""
        body = fh.read(_CSV_HEAD)
        whole = not fh.read(1)
        ratio = fh.text_bytes / max(fh.read_bytes, 1) if isinstance(fh, TextStream) else 1.0
    end = len(body) if whole else record_end(body, b'"')
    return header + body[:end], whole, ratio


def _profile_csv(text: Input, n_rows_sample: int, csv: CsvOptions) -> FileProfile:
    path = text.path
    names = _header(text, csv)
    size = size_of(path)
    sample, ratio = None, 1.0
    if text.seekable:  # a compressed stream cannot seek: its sample is its head
        body, lines, mean_line = _csv_sample_text(path, n_rows_sample)
        try:
            sample = _read_sample(body, csv, names, infer_schema_length=None)
        except pl.exceptions.PolarsError:
            pass  # the spans start inside quoted fields that hold newlines: sample the head
    if sample is None:
        body, whole, ratio = _csv_head_text(text, csv)
        header_len = body.index(b"\n") + 1 if csv.has_header and b"\n" in body else 0
        try:
            sample = _read_sample(body, csv, names, infer_schema_length=None)
        except pl.exceptions.PolarsError:  # the head is the file's own start: name the line
            first = 2 if names is not None else 1
            width = (
                len(names)
                if names is not None
                else body.split(b"\n", 1)[0].count(csv.separator.encode()) + 1
            )
            raise locate_problem(path, body[header_len:], first, csv, width) from None
        lines, mean_line = (
            (-1, 0.0) if whole else (0, (len(body) - header_len) / max(sample.height, 1))
        )
    header_len = body.index(b"\n") + 1 if csv.has_header and b"\n" in body else 0
    if not sample.columns:
        raise SourceFileError(path, "no columns found", "check the separator and header")
    sample = _typed(sample, _read_sample(body, csv, names, infer_schema_length=0))
    exact = lines < 0
    # A compressed file's text is estimated from the ratio its head decompressed at.
    rows = sample.height if exact else round((size * ratio - header_len) / mean_line)
    sizes = widths(sample)
    columns = tuple(ColumnProfile(n, d, sizes[n]) for n, d in sample.schema.items())
    return FileProfile(
        path=path,
        format="csv",
        file_bytes=size,
        rows=rows,
        rows_exact=exact,
        columns=columns,
        sample=sample,
        compression=text.compression,
    )
