"""Row-major layout of binary COPY tuples: fixed-width blocks built with numpy, joined by Arrow.

Each run of fixed-width fields of a batch (field count, length words, numbers, dates) becomes
one big-endian structured block, filled column by column; variable-width values stay Arrow
arrays. `segments` hands both to Arrow's element-wise join, which concatenates them row by row
in one C++ pass that releases the GIL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

Ints = NDArray[Any]  # integer arrays whose width (uint32/uint64) is picked at run time


@dataclass(frozen=True)
class Fixed:
    """A fixed-width part of every row: a constant, per-row values, or a writer that fills them."""

    dtype: str
    value: int | bytes | Ints | Callable[[Ints], object]


def width(parts: list[Fixed]) -> int:
    """Bytes a row of `parts` takes."""
    return sum(_itemsize(p.dtype) for p in parts)


@lru_cache(maxsize=256)
def _itemsize(dtype: str) -> int:
    return np.dtype(dtype).itemsize


@lru_cache(maxsize=256)
def _layout(formats: tuple[str, ...]) -> np.dtype[np.void]:
    """The structured dtype of one row of a run: a batch's few layouts recur in every piece."""
    return np.dtype({"names": _names(len(formats)), "formats": list(formats)})


@lru_cache(maxsize=64)
def _names(count: int) -> list[str]:
    return [f"f{i}" for i in range(count)]


def empty(n: int, dtype: type[np.generic]) -> Ints:
    """Scratch space from Arrow's pool: glibc would unmap big numpy temporaries and refault them."""
    return np.frombuffer(pa.allocate_buffer(n * np.dtype(dtype).itemsize), dtype=dtype)


def starts(n: int, size: int) -> pa.Buffer:
    """Arrow offsets of `n` values of `size` bytes each (a prefix of a cached, shared buffer)."""
    cached = _STARTS.get(size)
    if cached is None or cached.size < (n + 1) * 8:
        # Room for a quarter more rows, so a run's slightly larger pieces reuse it too.
        rows = n + 1 + n // 4
        cached = pa.py_buffer(np.arange(0, rows * size, size, dtype=np.int64))
        _STARTS[size] = cached
    return cached


# Offsets depend only on the row width, and a run encodes thousands of pieces of a few widths.
# Buffers are immutable once made, so threads may share them.
_STARTS: dict[int, pa.Buffer] = {}


def segments(parts: list[Fixed | pa.Array], n: int) -> list[pa.Array]:
    """Merge each run of fixed parts into one row-major block; keep var parts as they are."""
    arrays: list[pa.Array] = []
    run: list[Fixed] = []
    for part in [*parts, None]:
        if isinstance(part, Fixed):
            run.append(part)
            continue
        if run:
            arrays.append(
                pa.Array.from_buffers(
                    pa.large_binary(), n, [None, starts(n, width(run)), pack(run, n)]
                )
            )
            run = []
        if part is not None:  # variable width: a large_binary array, nulls write nothing
            arrays.append(part)
    return arrays


def pack(run: list[Fixed], n: int) -> pa.Buffer:
    """Lay out fixed parts side by side per row: a big-endian structured array, Arrow-allocated."""
    formats = tuple(p.dtype for p in run)
    layout, names = _layout(formats), _names(len(formats))
    size = layout.itemsize
    template = np.zeros(1, dtype=layout)
    for name, part in zip(names, run, strict=True):
        if isinstance(part.value, (int, bytes)):
            template[name] = part.value
    buffer = pa.allocate_buffer(n * size)
    block = np.frombuffer(buffer, dtype=layout)
    block.view(f"V{size}")[...] = template.view(f"V{size}")[0]  # constants in one pass
    for name, part in zip(names, run, strict=True):
        if callable(part.value):
            part.value(block[name])  # ufuncs write straight into the strided big-endian field
        elif not isinstance(part.value, (int, bytes)):
            block[name] = part.value
    return buffer
