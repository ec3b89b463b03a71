"""A file's text as one readable byte stream, decompressed as it is read, with a size hint.

Readers take what `Input.open` (or `open_text`, given any binary file object, local or remote)
returns and never see the compression. Output is decompressed a bounded piece at a time, so a
multi-gigabyte archive never sits in memory; a stream that ends early or does not decode raises
`DamagedArchive` naming how far it got.
"""

from __future__ import annotations

import io
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ingest.errors import DamagedArchive
from ingest.stages.remote import Location, open_binary, size_of

if sys.version_info >= (3, 14):
    from compression import zstd as zstd
else:  # the standard library's module, backported
    from backports import zstd as zstd

# Compressions read as a stream, and the magic bytes each compressed file starts with.
MAGIC: dict[str, bytes] = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd"}
# Compressions recognised by their first bytes but not read, and the command that unpacks them.
UNSUPPORTED: dict[str, tuple[bytes, str]] = {
    "zip": (b"PK\x03\x04", "unzip"),
    "bzip2": (b"BZh", "bunzip2 -k"),
    "xz": (b"\xfd7zXZ\x00", "xz -dk"),
}
SUFFIXES: dict[str, str] = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}

_READ = 1 << 16  # compressed bytes read from the source at a time
# Decompressed bytes handed out per step at most, however well the data compresses: zstd turns
# a few bytes of a run of equal lines into megabytes (a 90 KB frame of one repeated line took
# +196 MB of RSS when zstandard's decompressobj returned each input slice's output whole).
_OUT = 1 << 20
_BUFFER = 1 << 20


def compression_of(head: bytes) -> str:
    """What the first bytes say the data is compressed with: `none`, `gzip`, `zstd`, `zip`, ..."""
    for kind, magic in MAGIC.items():
        if head.startswith(magic):
            return kind
    for kind, (magic, _) in UNSUPPORTED.items():
        if head.startswith(magic):
            return kind
    return "none"


def compression_from_name(path: Path | str) -> str | None:
    """The compression a file's last suffix names (`.gz`, `.zst`), or None."""
    return SUFFIXES.get(Path(path).suffix.lower())


@dataclass(frozen=True)
class Input:
    """A local file and its compression: what a reader opens, picklable for a task."""

    path: Location
    compression: str = "none"

    @property
    def seekable(self) -> bool:
        """Whether a reader may seek in the text (only an uncompressed file)."""
        return self.compression == "none"

    def open(self) -> BinaryIO:
        """The file's text: the file itself, or a stream decompressing it."""
        raw = open_binary(self.path)
        if self.compression == "none":
            return raw  # type: ignore[return-value]
        return open_text(raw, self.compression, self.path, size_of(self.path))  # type: ignore[arg-type]


class TextStream(io.BufferedReader):
    """The decompressed text of a compressed byte stream, and how far decompression has got."""

    def __init__(self, decoder: _Decoder) -> None:
        super().__init__(decoder, _BUFFER)
        self.decoder = decoder

    @property
    def size_hint(self) -> int | None:
        """Stored (compressed) bytes of the source, when known."""
        return self.decoder.size_hint

    @property
    def read_bytes(self) -> int:
        """Compressed bytes consumed so far."""
        return self.decoder.read_bytes

    @property
    def text_bytes(self) -> int:
        """Decompressed bytes produced so far (a little ahead of what the reader took)."""
        return self.decoder.text_bytes


def open_text(
    raw: BinaryIO, compression: str, name: Path | str, size_hint: int | None = None
) -> TextStream:
    """A readable stream of the text `raw` holds compressed with `compression` (gzip or zstd).

    Args:
        raw: the compressed bytes, read front to back (need not be seekable: a remote object).
        compression: `gzip` or `zstd`.
        name: the file or URL errors name.
        size_hint: the compressed size, when known (used to estimate the text's size).

    Raises:
        ValueError: another compression.
    """
    if compression not in MAGIC:
        raise ValueError(f"cannot stream {compression!r}; supported: {', '.join(MAGIC)}")
    return TextStream(_Decoder(raw, compression, name, size_hint))


class _Decoder(io.RawIOBase):
    """Decompress `raw` member by member (gzip) or frame by frame (zstd), a bounded step a time."""

    def __init__(
        self, raw: BinaryIO, compression: str, name: Path | str, size_hint: int | None
    ) -> None:
        super().__init__()
        self.raw, self.compression, self.name, self.size_hint = raw, compression, name, size_hint
        self.read_bytes = self.text_bytes = self.lines = 0
        self._pending = memoryview(b"")
        self._input = b""  # compressed bytes read but not yet handed to the decompressor
        self._unit: zlib._Decompress | zstd.ZstdDecompressor | None = None
        self._done = False

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.raw.close()
        super().close()

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        while not self._pending:
            if self._done:
                return 0
            self._pending = memoryview(self._step_out())
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _damaged(self, cause: str) -> DamagedArchive:
        return DamagedArchive(
            self.name, self.compression, self.read_bytes, self.text_bytes, self.lines, cause
        )

    def _step_out(self) -> bytes:
        """The next piece of text (possibly empty); at the end of `raw`, mark the stream done."""
        if not self._input and self._needs_input():
            self._input = self.raw.read(_READ)
            self.read_bytes += len(self._input)
            if not self._input:
                if self._unit is not None:  # the last member or frame did not end
                    raise self._damaged("it ends before its compressed data does (truncated?)")
                self._done = True
                return b""
        if self._unit is None:
            if self.compression == "gzip" and not self._input.strip(b"\0"):
                self._input = b""  # zero padding after the last member, as gzip allows
                return b""
            self._unit = self._new_unit()
        try:
            out = self._decompress(self._unit)
        except (zlib.error, zstd.ZstdError) as exc:
            raise self._damaged(str(exc)) from None
        self.text_bytes += len(out)
        self.lines += out.count(b"\n")
        return out

    def _needs_input(self) -> bool:
        """Whether the decompressor has handed out all it can make of the input it was given.

        zlib keeps what it did not decompress in `unconsumed_tail` (in `_input` here); zstd keeps
        it inside, and says so with `needs_input`.
        """
        return not isinstance(self._unit, zstd.ZstdDecompressor) or self._unit.needs_input

    def _new_unit(self) -> zlib._Decompress | zstd.ZstdDecompressor:
        if self.compression == "gzip":
            return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        return zstd.ZstdDecompressor()

    def _decompress(self, unit: zlib._Decompress | zstd.ZstdDecompressor) -> bytes:
        """At most `_OUT` bytes of text; at the end of a member or frame, the next one's start
        is kept for a new decompressor."""
        data, self._input = self._input, b""
        out = unit.decompress(data, _OUT)
        if isinstance(unit, zstd.ZstdDecompressor):
            if unit.eof:  # a frame ended: another may follow
                self._input, self._unit = unit.unused_data, None
        else:
            self._input = unit.unconsumed_tail
            if unit.eof:  # a member ended: another may follow
                self._input, self._unit = unit.unused_data + self._input, None
        return out
