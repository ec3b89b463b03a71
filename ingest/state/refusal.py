"""Name the file row behind a value PostgreSQL refused in the middle of a COPY.

The server reports the refused tuple as "COPY t, line N, column c": N counts the tuples of
that one COPY stream. Pieces reach a stream in an order of their own (two encoders, or
several connections) and rows rejected by validation leave gaps, so each stream keeps a log
of which file rows it sent, in order.
"""

from __future__ import annotations

import bisect
import re
from collections import deque
from dataclasses import dataclass

import numpy as np
import psycopg
from numpy.typing import NDArray

from ingest.errors import IngestError
from ingest.pg.db import is_server_condition

# Row indexes kept for pieces with gaps in them (8 bytes each); older ones are let go first.
KEPT_ROWS = 1 << 20
_CONTEXT = re.compile(r"^COPY [^\n]*?, line (\d+)(?:, column ([^\n:]+))?", re.MULTILINE)


class RowRefused(IngestError):
    """The server refused a value of the COPY: where it was in the file, if the log knows."""

    def __init__(
        self, row: int | None, line_offset: int, column: str | None, reason: str, line: int
    ) -> None:
        self.row = row  # 0-based index of the row in the file; None if no longer known
        self.line_offset = line_offset  # the CSV line of `row` is row + line_offset
        self.column = column
        self.reason = reason
        self.line = line  # the tuple's number in its COPY stream, 1-based
        where = f"file row index {row:,}" if row is not None else f"COPY line {line:,}"
        super().__init__(f"PostgreSQL refused a value at {where}: {reason}")


@dataclass(frozen=True)
class _Piece:
    first: int  # stream tuples before this piece
    first_row: int
    rows: NDArray[np.int64] | None  # each tuple's file row when they are not consecutive
    line_offset: int


class StreamLog:
    """The file rows one COPY stream carried, piece by piece, in the order they were sent."""

    def __init__(self, kept_rows: int = KEPT_ROWS) -> None:
        self.sent = 0
        self._pieces: list[_Piece] = []
        self._starts: list[int] = []
        self._kept = 0
        self._limit = kept_rows
        self._holding: deque[int] = deque()  # pieces that keep their rows, oldest first

    def add(self, rows: NDArray[np.int64] | None, count: int, line_offset: int) -> None:
        """Record the next `count` tuples of the stream: file rows `rows`, if known."""
        if rows is not None and count:
            first = int(rows[0])
            gapless = int(rows[-1]) - first == count - 1
            kept = None if gapless else rows
            piece = _Piece(self.sent, first, kept, line_offset)
            if kept is not None:
                self._kept += count
                self._holding.append(len(self._pieces))
        else:
            piece = _Piece(self.sent, -1, None, line_offset)
        self._pieces.append(piece)
        self._let_go()
        self._starts.append(self.sent)
        self.sent += count

    def _let_go(self) -> None:
        """Forget the oldest gapped pieces' rows while more than the limit are kept."""
        while self._kept > self._limit:
            i = self._holding.popleft()
            piece = self._pieces[i]
            assert piece.rows is not None
            self._kept -= len(piece.rows)
            self._pieces[i] = _Piece(piece.first, -1, None, piece.line_offset)

    def locate(self, line: int) -> tuple[int | None, int]:
        """The file row (or None) and line offset of the stream's `line`-th tuple (1-based)."""
        if not 0 < line <= self.sent:
            return None, 0
        piece = self._pieces[bisect.bisect_right(self._starts, line - 1) - 1]
        index = line - 1 - piece.first
        if piece.rows is not None:
            return int(piece.rows[index]), piece.line_offset
        if piece.first_row < 0:
            return None, piece.line_offset
        return piece.first_row + index, piece.line_offset


def refusal(exc: BaseException, log: StreamLog) -> RowRefused | None:
    """`exc` as a RowRefused if the server blamed one tuple of this COPY, else None.

    A CONTEXT line only says where the COPY was: a full disk or a shutdown names a tuple too,
    yet is the server's condition, not the value's (SQLSTATE classes 08, 53 and 57P0x).
    """
    if not isinstance(exc, psycopg.Error) or exc.diag.context is None:
        return None
    if is_server_condition(exc):
        return None
    found = _CONTEXT.search(exc.diag.context)
    if found is None:
        return None
    line = int(found.group(1))
    column = found.group(2).strip() if found.group(2) else None
    row, offset = log.locate(line)
    reason = exc.diag.message_primary or str(exc).splitlines()[0]
    refused = RowRefused(row, offset, column, reason, line)
    refused.__cause__ = exc
    return refused
