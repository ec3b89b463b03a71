"""Run-wide uniqueness: the hashes of every value kept so far, in a numpy open-addressing set.

Memory: 8 bytes a slot at most 70% full, so about 11.5 bytes per distinct value (2.9 GB for 250M
rows); two different values share a 64-bit hash with a chance of about 0.2% in such a run, which
would reject one row as a false duplicate.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_MAX_LOAD = 0.7
_REHASH_SLOTS = 1 << 22
_UINT64 = npt.NDArray[np.uint64]


class SeenValues:
    """Hashes of the values kept so far in each unique column: one per run, across batches.

    Each column is an open-addressing hash set of 64-bit value hashes in one numpy array, at most
    70% full: 8 bytes a slot, 11.4-23 bytes per distinct value. 250M distinct values cost 2.9 GB
    per unique column when `expected_rows` is right (up to 5.7 GB, plus the old table while it
    doubles, when it is not). Two different values share a hash with probability about
    n²/2⁶⁵: 0.2% that any false duplicate occurs in a 250M-row run.
    """

    def __init__(self, expected_rows: int = 1 << 20) -> None:
        self.expected_rows = max(expected_rows, 1024)
        self._slots: dict[str, _UINT64] = {}
        self._sizes: dict[str, int] = {}

    @property
    def nbytes(self) -> int:
        """Memory held by the hash sets."""
        return sum(slots.nbytes for slots in self._slots.values())

    def contains(self, column: str, hashes: _UINT64) -> npt.NDArray[np.bool_]:
        """Which hashes were added earlier for this column."""
        slots = self._slots.get(column)
        if slots is None or hashes.size == 0:
            return np.zeros(hashes.size, dtype=np.bool_)
        return _probe(slots, _nonzero(hashes), insert=False)

    def add(self, column: str, hashes: _UINT64) -> npt.NDArray[np.bool_]:
        """Add hashes (distinct among themselves); returns which of them were there already."""
        slots = self._reserve(column, hashes.size)
        present = _probe(slots, _nonzero(hashes), insert=True)
        self._sizes[column] += hashes.size - int(present.sum())
        return present

    def _reserve(self, column: str, more: int) -> _UINT64:
        """The column's slots, grown (doubled at least) so `more` new hashes keep it 70% full."""
        size = self._sizes.setdefault(column, 0) + more
        slots = self._slots.get(column)
        if slots is not None and size <= slots.size * _MAX_LOAD:
            return slots
        capacity = int(max(size, self.expected_rows) / _MAX_LOAD) + 1
        bigger = np.zeros(max(capacity, 0 if slots is None else slots.size * 2), dtype=np.uint64)
        if slots is not None:
            # Rehash in slices so the temporaries stay small next to the two tables.
            for start in range(0, slots.size, _REHASH_SLOTS):
                part = slots[start : start + _REHASH_SLOTS]
                _probe(bigger, part[part != 0], insert=True)
        self._slots[column] = bigger
        return bigger


def _nonzero(hashes: _UINT64) -> _UINT64:
    """Zero marks an empty slot, so a zero hash is stored as one."""
    return np.where(hashes == 0, np.uint64(1), hashes)


def _probe(slots: _UINT64, hashes: _UINT64, *, insert: bool) -> npt.NDArray[np.bool_]:
    """Linear probing for all hashes at once; returns which were present (inserting the rest)."""
    capacity = slots.size
    # Range reduction by the top 32 bits: no modulo, any capacity below 2**32.
    where = ((hashes >> np.uint64(32)) * np.uint64(capacity)) >> np.uint64(32)
    slot = where.astype(np.intp)
    present = np.zeros(hashes.size, dtype=np.bool_)
    pending, wanted = np.arange(hashes.size), hashes
    while pending.size:
        current = slots[slot]
        hit, free = current == wanted, current == 0
        present[pending[hit]] = True
        if insert:
            # Two hashes may claim one free slot: the one that landed is done, the other moves on.
            claim = np.flatnonzero(free)
            slots[slot[claim]] = wanted[claim]
            free[claim] = slots[slot[claim]] == wanted[claim]
        going = ~(hit | free)
        pending, slot, wanted = pending[going], slot[going] + 1, wanted[going]
        slot[slot == capacity] = 0
    return present
