"""Naming the file row behind a tuple the server refused, from one COPY stream's log."""

from __future__ import annotations

import numpy as np
import polars as pl
import psycopg
import pytest

from ingest.stages import encode
from ingest.state.refusal import StreamLog, refusal


def test_consecutive_pieces_sent_out_of_order_map_back() -> None:
    """Two encoders hand pieces over in either order; each tuple keeps its own file row."""
    log = StreamLog()
    log.add(np.arange(100, 150), 50, 2)  # the second piece of the file went first
    log.add(np.arange(0, 100), 100, 2)

    assert log.locate(1) == (100, 2)
    assert log.locate(50) == (149, 2)
    assert log.locate(51) == (0, 2)
    assert log.locate(150) == (99, 2)


def test_gaps_left_by_rejected_rows_are_followed() -> None:
    """Rows quarantined by validation are not in the stream: line 3 is file row 7, not 2."""
    log = StreamLog()
    log.add(np.array([0, 1, 7, 8, 9]), 5, 0)

    assert [log.locate(line)[0] for line in range(1, 6)] == [0, 1, 7, 8, 9]


def test_lines_outside_the_stream_or_let_go_are_unknown() -> None:
    """Past the end, before the start, without rows, or forgotten over the limit: None."""
    log = StreamLog(kept_rows=4)
    log.add(np.array([0, 2, 4]), 3, 0)  # gapped: kept until more than 4 rows are held
    log.add(np.array([10, 12]), 2, 0)
    log.add(None, 3, 0)

    assert log.locate(1) == (None, 0)  # the first piece's rows were let go
    assert log.locate(5) == (12, 0)
    assert log.locate(6) == (None, 0)
    assert log.locate(0) == (None, 0)
    assert log.locate(9) == (None, 0)


def test_a_server_error_naming_a_copy_line_becomes_a_refusal(database_url: str) -> None:
    """A real refused COPY: the context's line and column, the server's reason, the file row."""
    frame = pl.DataFrame({"id": [1, 2, 3], "name": ["a", "b", "c\x00d"]}).cast({"id": pl.Int32})
    log = StreamLog()
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("create temporary table t (id int, name text)")
        with (
            pytest.raises(psycopg.Error) as info,
            cur.copy("copy t from stdin (format binary)") as copy,
        ):
            log.add(np.array([5, 6, 9]), 3, 2)
            copy.write(encode.HEADER)
            copy.write(encode.encode(frame))
            copy.write(encode.TRAILER)

    refused = refusal(info.value, log)

    assert refused is not None
    assert (refused.line, refused.row, refused.column) == (3, 9, "name")
    assert "0x00" in refused.reason
    assert refusal(ValueError("not a server error"), log) is None
