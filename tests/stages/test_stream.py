"""Compressed text reads back byte for byte as a stream; a damaged archive says how far it got."""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

import pytest

from ingest.config import CsvOptions
from ingest.errors import DamagedArchive
from ingest.runtime.memory import peak_rss, reset_peak_rss
from ingest.stages import csvread
from ingest.stages.stream import Input, open_text, zstd

TEXT = b"id,name\n" + b"".join(b'%d,"n\n%d"\n' % (i, i) for i in range(60_000))


def _gzip(data: bytes) -> bytes:
    """Two gzip members, as `cat a.gz b.gz` makes: one stream of text."""
    return gzip.compress(data[:300_000]) + gzip.compress(data[300_000:])


def _zstd(data: bytes) -> bytes:
    """Two zstd frames, with checksums as the zstd tool writes them."""
    checked = {zstd.CompressionParameter.checksum_flag: 1}
    return zstd.compress(data[:300_000], options=checked) + zstd.compress(
        data[300_000:], options=checked
    )


PACK = {"gzip": _gzip, "zstd": _zstd}


class _Pipe(io.RawIOBase):
    """A byte source that cannot seek and hands out small reads, like a network response."""

    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        n = min(len(buffer), 1000, len(self._data) - self._at)
        buffer[:n] = self._data[self._at : self._at + n]
        self._at += n
        return n


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_the_stream_is_the_text_byte_for_byte(kind: str) -> None:
    """Every member or frame is decompressed in order, from a source that cannot seek."""
    stream = open_text(_Pipe(PACK[kind](TEXT)), kind, "remote.csv.gz")  # type: ignore[arg-type]
    assert stream.readline() == b"id,name\n"
    pieces = []
    while piece := stream.read(1 << 16):
        assert len(piece) <= 1 << 16
        pieces.append(piece)
    assert b"id,name\n" + b"".join(pieces) == TEXT
    assert stream.text_bytes == len(TEXT)


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_archive_names_the_file_and_how_far_it_got(
    tmp_path: Path, kind: str, damage: str
) -> None:
    """Cut short or with flipped bytes: DamagedArchive with the compressed bytes and the lines."""
    packed = PACK[kind](TEXT)
    if damage == "truncated":
        packed = packed[: len(packed) * 2 // 3]
    else:  # in the second member or frame, after text was already handed out
        at = len(packed) * 3 // 4
        packed = packed[:at] + bytes(b ^ 0xFF for b in packed[at : at + 64]) + packed[at + 64 :]
    path = tmp_path / f"data.csv.{'gz' if kind == 'gzip' else 'zst'}"
    path.write_bytes(packed)
    with pytest.raises(DamagedArchive) as info, Input(path, kind).open() as fh:
        while fh.read(1 << 20):
            pass
    error = info.value
    assert str(path) in str(error)
    assert 0 < error.read_bytes <= len(packed)
    assert 0 < error.lines < TEXT.count(b"\n")
    assert f"{error.lines:,} lines of text decompressed" in str(error)
    assert ("truncated" in str(error)) == (damage == "truncated")


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_compressed_csv_chunks_equal_the_plain_files(tmp_path: Path, kind: str) -> None:
    """The reader cuts a stream into the same records, on the same lines, as the plain file."""
    plain = tmp_path / "data.csv"
    plain.write_bytes(TEXT)
    packed = tmp_path / "data.csv.pack"
    packed.write_bytes(PACK[kind](TEXT))
    schema = {"id": csvread.pl.Int64(), "name": csvread.pl.String()}
    options = CsvOptions()

    def read(path: Path, text: Input) -> list[tuple[int, list[object]]]:
        chunks = csvread.read_chunks(path, list(schema), schema, options, 50_000, text=text)
        return [(c.first_line, c.frame.rows()) for c in chunks]

    expected = read(plain, Input(plain))
    assert len(expected) > 5  # several chunks, each record cut at a record end
    assert read(packed, Input(packed, kind)) == expected
    assert expected[-1][1][-1] == (59_999, "n\n59999", 2 * 59_999 + 2)


def _one_line_repeated(kind: str, text_bytes: int) -> bytes:
    """`text_bytes` of one CSV line over and over, compressed: about 1,000 times smaller."""
    block = b"1,the same line again and again, as an export of a default value\n" * 16_384
    if kind == "gzip":
        packer = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
        end = packer.flush
    else:
        packer = zstd.ZstdCompressor()  # type: ignore[assignment]
        end = lambda: packer.flush(zstd.ZstdCompressor.FLUSH_FRAME)  # noqa: E731
    parts = [packer.compress(block) for _ in range(text_bytes // len(block))]
    return b"".join([*parts, end()])


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_text_that_compresses_a_thousandfold_comes_out_a_bounded_piece_at_a_time(
    kind: str,
) -> None:
    """256 MB of text from a few hundred KB: memory grows by pieces, not by the expansion."""
    packed = _one_line_repeated(kind, 256 << 20)
    assert len(packed) < 2 << 20
    reset_peak_rss()
    before = peak_rss()
    text = 0
    with open_text(io.BytesIO(packed), kind, "same.csv.gz") as stream:
        while piece := stream.read(1 << 20):
            text += len(piece)
    assert text >= 250 << 20
    # A decoder that returned each input slice's text whole grew by ~200 MB here.
    assert peak_rss() - before < 32 << 20
