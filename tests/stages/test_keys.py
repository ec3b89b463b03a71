"""Keyed-load decisions without a server: key checks, row numbers, the cursor filter."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ingest.config import SourceConfig
from ingest.errors import ConfigError
from ingest.stages import incremental, keys


def source(**kw: object) -> SourceConfig:
    base: dict[str, object] = {"name": "s", "input_path": "x.csv", "table_name": "t"}
    return SourceConfig.model_validate(base | kw)


def test_key_columns_become_not_nullable_and_keep_their_other_checks() -> None:
    """A NULL key is a bad row; a check the user set on the key column stays."""
    given = source(
        if_table_exists="merge",
        primary_key=["a", "b"],
        validation_data={"checks": {"a": {"ge": 1}, "c": {"nullable": False}}},
    )
    checks = keys.with_key_checks(given).validation_data.checks
    assert (checks["a"].nullable, checks["a"].ge) == (False, 1)
    assert checks["b"].nullable is False and checks["c"].nullable is False


def test_rows_are_numbered_as_the_user_finds_them() -> None:
    """CSV rows get their line (index + offset), Parquet rows their index."""
    frame = pl.DataFrame({"id": [1, 2]})
    spec = keys.plan_merge(
        Path("c.yml"),
        source(if_table_exists="merge", primary_key=["id"]),
        dict(frame.schema),
        lineage=("_loaded_at", "_run_id"),
        file=Path("x.csv"),
        fmt="csv",
        schema="raw",
        run_id="r",
        meta="m",
    )
    out = keys.numbered(frame, np.array([0, 5]), 2, spec)
    assert out[keys.ROW_COLUMN].to_list() == [2, 7]
    assert keys.numbered(frame, np.array([0, 5]), 2, None).columns == ["id"]


def test_a_file_column_named_like_the_merges_own_is_refused() -> None:
    """The staged row-number column cannot be shadowed by a file column."""
    with pytest.raises(ConfigError, match="which the merge adds itself"):
        keys.plan_merge(
            Path("c.yml"),
            source(if_table_exists="merge", primary_key=["id"]),
            {"id": pl.Int64(), keys.ROW_COLUMN: pl.Int64()},
            lineage=("_loaded_at", "_run_id"),
            file=Path("x.csv"),
            fmt="csv",
            schema="raw",
            run_id="r",
            meta="m",
        )


@pytest.mark.parametrize(
    ("mark", "kept", "skipped"),
    [
        (None, [1, 2, 3, None], 0),
        (datetime(2024, 1, 2, tzinfo=UTC), [3, None], 2),  # at the mark is skipped; NULL kept
        (datetime(2030, 1, 1, tzinfo=UTC), [None], 3),
    ],
)
def test_the_cursor_keeps_rows_above_the_mark(
    mark: datetime | None, kept: list[int | None], skipped: int
) -> None:
    """Rows at or below the high-water mark are dropped and counted; the top is the kept max."""
    when = [datetime(2024, 1, d, tzinfo=UTC) for d in (1, 2, 3)] + [None]
    frame = pl.DataFrame({"id": [1, 2, 3, None], "at": when})
    cursor = incremental.Cursor("at", "timestamptz", mark)
    out = incremental.keep(cursor, frame, pl.Series([10, 11, 12, 13]))
    assert out.good["id"].to_list() == kept and out.skipped == skipped
    assert out.rows.to_list() == [10 + i for i, x in enumerate([1, 2, 3, None]) if x in kept]
    assert incremental.higher(None, out.top) == out.top


@pytest.mark.parametrize(
    ("batches", "repeated"),
    [
        ([[(1, "a"), (2, "a")], [(1, "b"), (3, "a")]], False),  # composite keys all differ
        ([[(1, "a"), (1, "a")]], True),  # within one batch
        ([[(1, "a")], [(2, "b")], [(1, "a")]], True),  # across batches
    ],
)
def test_the_key_watch_tells_whether_a_key_may_repeat(
    batches: list[list[tuple[int, str]]], repeated: bool
) -> None:
    """A merge skips its dedup pass only when no key was seen twice."""
    spec = keys.plan_merge(
        Path("c.yml"),
        source(if_table_exists="merge", primary_key=["n", "s"]),
        {"n": pl.Int64(), "s": pl.String()},
        lineage=("_loaded_at", "_run_id"),
        file=Path("x.csv"),
        fmt="csv",
        schema="raw",
        run_id="r",
        meta="m",
    )
    watch = keys.KeyWatch(spec, 100)
    for batch in batches:
        watch.see(pl.DataFrame(batch, schema=["n", "s"], orient="row"))
    assert watch.repeated is repeated
