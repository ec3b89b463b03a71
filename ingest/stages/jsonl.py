"""JSON lines: typed from lines spread through the file, read in line-aligned pieces.

Each line is one JSON object; its keys are the columns. Nested objects and arrays keep their own
JSON text and load as jsonb. A line that is not a JSON object is a bad row named by its line
(of the decompressed text), kept in quarantine like a bad CSV value.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator

import numpy as np
import polars as pl
from numpy.typing import NDArray

from ingest.errors import SourceFileError
from ingest.stages.csvpieces import pieces
from ingest.stages.csvread import ROW, Chunk
from ingest.stages.fileprofile import ColumnProfile, FileProfile, widths
from ingest.stages.remote import open_binary, size_of
from ingest.stages.stream import Input, TextStream
from ingest.stages.types import JSON_FIELD, JSON_TEXT

_SMALL = 8 << 20
_SPANS = 10
_HEAD = 4 << 20
_RAW_CHARS = 2000  # of a bad line kept in quarantine
_NESTED = (pl.List, pl.Array, pl.Struct)
# A JSON number, true or false: kept as it is in a jsonb column; other text is a JSON string.
_JSON_LITERAL = r"^\s*(?:[\[{]|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\s*$|true\s*$|false\s*$)"


def _sample_text(text: Input, n_rows_sample: int) -> tuple[bytes, bool, float]:
    """Lines to type from, whether they are the whole text, and text bytes per stored byte."""
    size = size_of(text.path)
    if text.seekable and size > _SMALL:  # lines from spans spread through the file
        per_span = max(n_rows_sample // _SPANS, 1)
        lines: list[bytes] = []
        with open_binary(text.path) as fh:
            for i in range(_SPANS):
                fh.seek(size * i // _SPANS)
                if i:
                    fh.readline()  # skip to a line start
                lines += [line for _ in range(per_span) if (line := fh.readline())]
        body = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines)
        return body, False, 1.0
    with text.open() as fh:
        body = fh.read(_HEAD)
        whole = not fh.read(1)
        ratio = fh.text_bytes / max(fh.read_bytes, 1) if isinstance(fh, TextStream) else 1.0
    if not whole:
        body = body[: body.rfind(b"\n") + 1]
    return body, whole, ratio


def _refuse(word: str) -> float:
    raise ValueError(f"{word} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range")
    return value


def _strict_loads(line: bytes) -> object:
    """`json.loads` without Python's extensions: NaN, Infinity and numbers that overflow to
    infinity are not JSON, and polars refuses to read them (a whole piece with them)."""
    return json.loads(line, parse_constant=_refuse, parse_float=_finite)


def _objects(body: bytes) -> bytes:
    """The lines of `body` that are JSON objects (the others are bad rows at load time)."""
    kept = []
    for line in body.splitlines():
        try:
            if isinstance(_strict_loads(line), dict):
                kept.append(line)
        except ValueError:
            continue
    return b"\n".join(kept) + b"\n"


def _read_types(schema: dict[str, pl.DataType]) -> dict[str, pl.DataType]:
    """How polars reads each column: JSON text and decimals as text (it has no exact reader)."""
    return {
        name: pl.String() if dtype == JSON_TEXT or isinstance(dtype, pl.Decimal) else dtype
        for name, dtype in schema.items()
    }


def _profiled_type(dtype: pl.DataType) -> pl.DataType:
    if isinstance(dtype, _NESTED):
        return JSON_TEXT
    if dtype in (pl.Int128(), pl.UInt64(), pl.UInt128()):
        return pl.Decimal(38, 0)  # stored exactly by PostgreSQL, which has no 128-bit integer
    if dtype == pl.Null():
        return pl.String()
    return dtype


def profile_jsonl(text: Input, n_rows_sample: int) -> FileProfile:
    """Types and widths from a sample of lines (spread through a plain file, else the head).

    Raises:
        SourceFileError: no line of the sample is a JSON object.
    """
    path = text.path
    body, whole, ratio = _sample_text(text, n_rows_sample)
    try:
        guessed = pl.read_ndjson(io.BytesIO(body), infer_schema_length=None)
    except pl.exceptions.PolarsError:
        body = _objects(body)
        try:
            guessed = pl.read_ndjson(io.BytesIO(body), infer_schema_length=None)
        except pl.exceptions.PolarsError as exc:
            raise SourceFileError(
                path, f"not readable as JSON lines ({exc})", "check the file"
            ) from None
    if not guessed.width:
        raise SourceFileError(
            path, "no line of its sample is a JSON object with keys", "check the file"
        )
    schema = {name: _profiled_type(dtype) for name, dtype in guessed.schema.items()}
    sample = _typed(pl.read_ndjson(io.BytesIO(body), schema=_read_types(schema)), schema)
    size = size_of(path)
    lines = max(body.count(b"\n"), 1)
    rows = sample.height if whole else round(size * ratio / (len(body) / lines))
    sizes = widths(sample)
    return FileProfile(
        path=path,
        format="jsonl",
        file_bytes=size,
        rows=rows,
        rows_exact=whole,
        columns=tuple(ColumnProfile(n, d, sizes[n]) for n, d in schema.items()),
        sample=sample,
        compression=text.compression,
    )


def _typed(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """`frame` as read, with the text of its JSON columns wrapped as JSON_TEXT.

    A value polars gives as plain text (a JSON string in a column of objects) is quoted back
    into JSON; a number, true or false is JSON as it is.
    """
    wrapped = []
    for name in (n for n, dtype in schema.items() if dtype == JSON_TEXT):
        value = pl.col(name)
        quoted = pl.struct(value.alias("v")).struct.json_encode().str.slice(5).str.head(-1)
        value = pl.when(value.str.contains(_JSON_LITERAL)).then(value).otherwise(quoted)
        wrapped.append(
            pl.when(value.is_not_null()).then(pl.struct(value.alias(JSON_FIELD))).alias(name)
        )
    return frame.with_columns(wrapped) if wrapped else frame


def read_jsonl(text: Input, schema: dict[str, pl.DataType], chunk_bytes: int) -> Iterator[Chunk]:
    """The text's objects in line-aligned pieces, each row numbered by its 1-based line.

    A piece that does not read with `schema` is read line by line: lines that are not JSON
    objects go to the chunk's `unparsed` rejects, the rest are read as text for the cast stage
    to parse (its failures become bad rows as a CSV's do).
    """
    read_as = _read_types(schema)
    as_text: dict[str, pl.DataType] = dict.fromkeys(schema, pl.String())
    for piece in pieces(text.path, chunk_bytes, b"", False, None, text):
        buf, first = piece.data, piece.line
        lines, blank = _lines(buf, first)
        try:
            frame = _read_known(text, buf, first, read_as)
            unparsed = None
            if frame.height != int((~blank).sum()):
                raise ValueError("polars and the line count disagree")
            rows = lines[~blank]
        except (pl.exceptions.PolarsError, ValueError):
            try:
                frame, rows, unparsed = _line_by_line(buf, lines, blank, as_text)
            except _NewKey as new:
                raise _new_key(text, buf, first, str(new), list(schema)) from None
        frame = _typed(frame, schema).hstack([pl.Series(ROW, rows)])
        at = int(lines[0]) if lines.size else first
        yield Chunk(frame, at, at, unparsed is not None, int(blank.sum()), unparsed)


def _read_known(
    text: Input, buf: bytes, first: int, read_as: dict[str, pl.DataType]
) -> pl.DataFrame:
    """The piece with the profiled columns; a key the profile has no column for is refused.

    Reading with a fixed schema would drop such a key's values without a word; inferring the
    piece's own keys (with the profiled types imposed) costs ~3x the parse, and finds them.
    """
    frame = pl.read_ndjson(io.BytesIO(buf), schema_overrides=read_as, infer_schema_length=None)
    extra = [name for name in frame.columns if name not in read_as]
    if extra:
        raise _new_key(text, buf, first, extra[0], list(read_as))
    return frame.select(
        pl.col(n) if n in frame.columns else pl.lit(None, d).alias(n) for n, d in read_as.items()
    )


def _new_key(text: Input, buf: bytes, first: int, key: str, known: list[str]) -> SourceFileError:
    """The error for a key that the sample did not show, naming the first line that has it."""
    line = first
    for number, raw in enumerate(buf.split(b"\n")):
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        if isinstance(value, dict) and key in value:
            line = first + number
            break
    shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
    return SourceFileError(
        text.path,
        f"line {line:,}: key {key!r} is not one of the columns profiled from the sample "
        f"({shown}); loading would drop its values",
        "raise os_configuration.n_rows_sample so the sample sees the key, or take it out",
    )


def _lines(buf: bytes, first: int) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Each line's 1-based number, and which lines are empty."""
    data = np.frombuffer(buf, np.uint8)
    ends = np.flatnonzero(data == ord("\n"))
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    length = ends - starts
    cr = data[np.maximum(ends - 1, 0)] == ord("\r")
    blank: NDArray[np.bool_] = (length == 0) | ((length == 1) & cr)
    return first + np.arange(len(ends), dtype=np.int64), blank


def _line_by_line(
    buf: bytes,
    numbers: NDArray[np.int64],
    blank: NDArray[np.bool_],
    as_text: dict[str, pl.DataType],
) -> tuple[pl.DataFrame, NDArray[np.int64], pl.DataFrame]:
    """Read each line on its own: good ones as text, the others as rejects with a reason."""
    good: list[bytes] = []
    rows: list[int] = []
    bad: list[tuple[int, str, str]] = []
    for line, number, empty in zip(
        buf.split(b"\n")[:-1], numbers.tolist(), blank.tolist(), strict=True
    ):
        if empty:
            continue
        reason = _not_an_object(line, as_text)
        if reason is None:
            good.append(line)
            rows.append(number)
        else:
            bad.append((number, reason, _raw(line)))
    frames, kept = _readable(good, rows, as_text, bad)
    frame = pl.concat(frames) if frames else pl.DataFrame(schema=as_text)
    bad.sort()
    rejects = pl.DataFrame(
        {
            ROW: [b[0] for b in bad],
            "column": ["(whole line)"] * len(bad),
            "rule": ["json"] * len(bad),
            "reason": [b[1] for b in bad],
            "raw": [b[2] for b in bad],
        },
        schema=dict.fromkeys([ROW, "column", "rule", "reason", "raw"], pl.String())
        | {ROW: pl.Int64()},
    )
    return frame, np.array(kept, dtype=np.int64), rejects


def _readable(
    lines: list[bytes],
    rows: list[int],
    as_text: dict[str, pl.DataType],
    bad: list[tuple[int, str, str]],
) -> tuple[list[pl.DataFrame], list[int]]:
    """The JSON objects polars reads, in order, with their line numbers; the ones it cannot read
    are added to `bad`.

    Read all at once, and only a part that fails is halved and read again, so a piece with one
    such line costs about 2 log2(lines) reads, not one read a line (a 500,000-line piece took
    213 s read line by line).
    """
    if not lines:
        return [], []
    try:
        return [pl.read_ndjson(io.BytesIO(b"\n".join(lines) + b"\n"), schema=as_text)], rows
    except pl.exceptions.PolarsError as exc:
        if len(lines) == 1:
            bad.append((rows[0], f"not readable: {str(exc).splitlines()[0]}", _raw(lines[0])))
            return [], []
    half = len(lines) // 2
    head, head_rows = _readable(lines[:half], rows[:half], as_text, bad)
    tail, tail_rows = _readable(lines[half:], rows[half:], as_text, bad)
    return head + tail, head_rows + tail_rows


def _raw(line: bytes) -> str:
    return line[:_RAW_CHARS].decode("utf-8", errors="replace")


def _not_an_object(line: bytes, known: dict[str, pl.DataType]) -> str | None:
    """Why a line is not a JSON object, or None (a key not in `known` is a refusal)."""
    try:
        value = _strict_loads(line)
    except UnicodeDecodeError:
        return "bytes that are not UTF-8"
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg} at character {exc.pos + 1})"
    except ValueError as exc:  # NaN, Infinity, a number past a double's range
        return f"not JSON ({exc})"
    if not isinstance(value, dict):
        return f"a JSON {type(value).__name__}, not an object"
    extra = [key for key in value if key not in known]
    if extra:
        raise _NewKey(extra[0])
    return None


class _NewKey(Exception):
    """A line has a key the profile has no column for (turned into a SourceFileError)."""
