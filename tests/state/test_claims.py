"""A partition's result survives its trip through the claims table's JSON, types and all."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal

import pytest

from ingest.pg.commit import PartitionResult
from ingest.state.claims import from_json, to_json


@pytest.mark.parametrize(
    "top",
    [
        None,
        3,
        2.5,
        "x",
        date(2020, 1, 2),
        datetime(2020, 1, 2, 3, 4, tzinfo=UTC),
        time(1, 2),
        Decimal("1.50"),
    ],
)
def test_a_result_reads_back_as_it_was_written(top: object) -> None:
    result = PartitionResult(
        "0:f.csv:0-9", 9, 8, 1, 2, ("line 3: ge: -1",), (("ge", 9),), 0.5, 1, top
    )
    back = from_json(to_json(result))
    assert back == result and type(back.cursor_top) is type(top)
