"""Tell what a file is from its content (magic bytes), checked against its name and the config.

A file's format and compression come from its first bytes; the name and the config's `format:`
and `compression:` only confirm them, and a contradiction is an error naming both sides, so a
Parquet file named .csv or a plain file named .gz never loads as something it is not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ingest.config import SourceConfig
from ingest.errors import SourceFileError
from ingest.stages.remote import Location, open_binary
from ingest.stages.stream import (
    MAGIC,
    SUFFIXES,
    UNSUPPORTED,
    Input,
    compression_from_name,
    compression_of,
)

# Formats by file suffix, after any compression suffix is taken off.
_BY_SUFFIX = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
}
_NAMES = {
    "csv": "CSV",
    "tsv": "TSV",
    "parquet": "Parquet",
    "jsonl": "JSON lines",
    "arrow": "Arrow IPC",
}
_BINARY = ("parquet", "arrow")
_ARROW_FILE = b"ARROW1"
_ARROW_STREAM = b"\xff\xff\xff\xff"
_HEAD = 1 << 16


@dataclass(frozen=True)
class Detected:
    """A file's format (csv, parquet, jsonl, arrow), its compression, and whether it is TSV."""

    format: str
    compression: str = "none"
    tab_separated: bool = False

    @property
    def text(self) -> bool:
        """Whether the content is read as lines of text (CSV, TSV, JSON lines)."""
        return self.format in ("csv", "jsonl")


def content_format(head: bytes) -> str:
    """What an uncompressed file's first bytes say it is: parquet, arrow, jsonl or csv."""
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith((_ARROW_FILE, _ARROW_STREAM)):
        return "arrow"
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n").split(b"\n", 1)[0]
    if first.startswith(b"{"):
        try:
            return "jsonl" if isinstance(json.loads(first), dict) else "csv"
        except ValueError:
            # A first line cut off by the read, or a CSV header that starts with a brace.
            return "jsonl" if len(first) >= len(head) - 1 else "csv"
    return "csv"


def name_format(path: Location) -> str | None:
    """The format the name says, looking past a compression suffix (`x.csv.gz` is csv)."""
    name = Path(path.name)
    name = Path(name.stem) if compression_from_name(name) else name
    return _BY_SUFFIX.get(name.suffix.lower())


def detect(path: Location, declared: str = "auto", compression: str = "auto") -> Detected:
    """The file's format and compression: from its content, checked against name and config.

    Args:
        path: the file.
        declared: the config's `format:` (auto, csv, tsv, parquet, jsonl, arrow).
        compression: the config's `compression:` (auto, gzip, zstd, none).

    Raises:
        SourceFileError: the compression is not one read here, the content contradicts the
            name or the config, or neither the name nor the content tells the format.
    """
    try:
        with open_binary(path) as fh:
            head = fh.read(8)
    except OSError:
        head = b""
    packed = _compression(path, head, compression)
    if packed != "none":
        head = _text_head(path, packed)
    content = content_format(head) if head else None
    by_name = name_format(path)
    wanted = declared if declared != "auto" else by_name
    said = f"format: {declared}" if declared != "auto" else f"its name ({path.name})"
    if content in _BINARY and packed != "none":
        raise SourceFileError(
            path,
            f"it is a {_NAMES[content]} file inside {packed} compression; {_NAMES[content]} "
            "files compress their own data and are read uncompressed",
            f"decompress it (`{'gunzip -k' if packed == 'gzip' else 'zstd -d'} {path.name}`)",
        )
    if wanted is None:
        if content in (None, "csv"):
            raise SourceFileError(
                path,
                "cannot tell its format from the name",
                "set `format: csv` (or tsv, parquet, jsonl, arrow)",
            )
        return _result(content or "csv", packed)
    if content is None:  # empty or unreadable: the name decides, the profile says what is wrong
        return _result(wanted, packed)
    kind = "csv" if wanted == "tsv" else wanted
    if content != kind:
        raise _mismatch(path, content, kind, said, head)
    return _result(wanted, packed)


def _result(wanted: str, packed: str) -> Detected:
    if wanted == "tsv":
        return Detected("csv", packed, tab_separated=True)
    return Detected(wanted, packed)


def _compression(path: Location, head: bytes, declared: str) -> str:
    """The compression of the content, checked against the config and the name."""
    content = compression_of(head)
    if content in UNSUPPORTED:
        unpack = UNSUPPORTED[content][1]
        raise SourceFileError(
            path,
            f"it is a {content}-compressed file (by its first bytes); compressed input is read "
            f"when it is {' or '.join(MAGIC)}",
            f"decompress it first (`{unpack} {path.name}`), or recompress it with gzip or zstd",
        )
    named = compression_from_name(path.name)
    if declared not in ("auto", content):
        said = "it is not compressed" if content == "none" else f"it is {content}-compressed"
        raise SourceFileError(
            path,
            f"{said} (by its first bytes), but compression: {declared} says {declared}",
            f"set `compression: auto` (or `{content}`)",
        )
    if declared == "auto" and named is not None and named != content:
        said = "it is not compressed" if content == "none" else f"it is {content}-compressed"
        suffix = next(s for s, kind in SUFFIXES.items() if kind == named and path.name.endswith(s))
        raise SourceFileError(
            path,
            f"its name ends in {suffix} ({named}), but {said} (by its first bytes)",
            f"rename it, or set `compression: {content}` to read it as it is",
        )
    if declared == "auto" and named is None and content != "none":
        suffix = next(s for s, kind in SUFFIXES.items() if kind == content)
        raise SourceFileError(
            path,
            f"it is {content}-compressed (by its first bytes), but its name ({path.name}) has "
            f"no {suffix} suffix",
            f"rename it to {path.name}{suffix}, or set `compression: {content}`",
        )
    return content


def _text_head(path: Location, packed: str) -> bytes:
    """The first decompressed bytes (damage further on is found, and named, by the read)."""
    with Input(path, packed).open() as fh:
        return fh.read(_HEAD)


def _mismatch(path: Location, content: str, wanted: str, said: str, head: bytes) -> SourceFileError:
    """The error for content that contradicts the name or the config."""
    if content == "parquet":
        return SourceFileError(
            path,
            f"it is a Parquet file (it starts with PAR1), but {said} says {_NAMES[wanted]}",
            "set `format: parquet` (or `auto`) or rename it to .parquet",
        )
    if wanted == "parquet":
        return SourceFileError(
            path,
            f"not a readable Parquet file: {said} says Parquet, but it does not start with "
            "Parquet's magic bytes PAR1",
            f"check the file; if it is {_NAMES[content]}, set `format: {content}` or rename it",
        )
    if wanted == "arrow":
        return SourceFileError(
            path,
            f"not an Arrow IPC file: {said} says Arrow, but it starts with neither ARROW1 (file "
            f"format) nor an IPC stream's marker; it reads as {_NAMES[content]}",
            f"set `format: {content}` or rename it",
        )
    if content == "arrow":
        kind = "file" if head.startswith(_ARROW_FILE) else "stream"
        return SourceFileError(
            path,
            f"it is an Arrow IPC {kind} (by its first bytes), but {said} says {_NAMES[wanted]}",
            "set `format: arrow` (or `auto`) or rename it to .arrow",
        )
    first = "a JSON object" if content == "jsonl" else "not a JSON object"
    return SourceFileError(
        path,
        f"its first line is {first}, so it reads as {_NAMES[content]}, but {said} says "
        f"{_NAMES[wanted]}",
        f"set `format: {content}` or rename it",
    )


def as_read(source: SourceConfig, path: Location) -> tuple[SourceConfig, Detected]:
    """What the file is, and the source as it reads it: TSV reads tabs unless told otherwise."""
    found = detect(path, source.format, source.compression)
    if found.tab_separated and "separator" not in source.csv.model_fields_set:
        tabs = source.csv.model_copy(update={"separator": "\t"})
        source = source.model_copy(update={"csv": tabs})
    return source, found
