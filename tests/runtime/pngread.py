"""A small PNG reader for the screenshot tests: 8-bit RGB or RGBA, not interlaced."""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(data: bytes) -> np.ndarray:
    """The image as a (height, width, channels) uint8 array."""
    assert data[:8] == SIGNATURE, "not a PNG"
    pos, idat, head = 8, [], None
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + size]
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + size
    assert head is not None, "no IHDR chunk"
    width, height, depth, colour, _, _, interlace = head
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unsupported PNG {head}"
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(height, -1)
    out = np.zeros((height, width * bpp), np.uint8)
    prev = np.zeros(width * bpp, np.int64)
    for y in range(height):
        cur = _unfilter(int(raw[y, 0]), raw[y, 1:].astype(np.int64), prev, bpp)
        out[y], prev = cur, cur
    return out.reshape(height, width, bpp)


def _unfilter(kind: int, line: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    if kind == 0:
        return line
    if kind == 1:
        return np.cumsum(line.reshape(-1, bpp), axis=0).reshape(-1) % 256
    if kind == 2:
        return (line + prev) % 256
    # Average and Paeth depend on the byte just decoded: plain Python ints are fastest here.
    ln, up, cu = line.tolist(), prev.tolist(), [0] * len(line)
    for i in range(len(ln)):
        a = cu[i - bpp] if i >= bpp else 0
        b = up[i]
        if kind == 3:
            cu[i] = (ln[i] + (a + b) // 2) & 255
            continue
        c = up[i - bpp] if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        cu[i] = (ln[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    return np.array(cu, np.int64)
