"""The planner is pure arithmetic: thresholds and batch sizes checked with numbers alone."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from ingest.stages.plan import (
    BATCH_COST_FACTOR,
    EAGER_FASTER_BELOW,
    FIXED_OVERHEAD,
    GROUP_BATCHES,
    MAX_BATCH_BYTES,
    MIN_BATCH_BYTES,
    ServerFacts,
    copy_connections,
    estimate_batched_bytes,
    estimate_eager_bytes,
    make_plan,
    memory_budget,
)
from ingest.stages.profile import ColumnProfile, FileProfile

MB = 1_000_000


def profile(
    rows: int, row_bytes: float = 40.0, fmt: str = "parquet", row_groups: int = 1
) -> FileProfile:
    return FileProfile(
        path=Path("x"),
        format=fmt,
        file_bytes=rows * 10,
        rows=rows,
        rows_exact=True,
        columns=(
            ColumnProfile("a", pl.Int64(), 8.0),
            ColumnProfile("b", pl.String(), row_bytes - 8),
        ),
        sample=pl.DataFrame(),
        row_groups=row_groups,
    )


def test_budget_uses_margin_or_explicit_limit() -> None:
    """The budget is available RAM less the OS margin, unless a limit is given."""
    assert memory_budget(1000 * MB, 0.3) == 700 * MB
    assert memory_budget(1000 * MB, 0.3, limit=400 * MB) == 400 * MB


@pytest.mark.parametrize(
    ("rows", "budget", "expected"),
    [
        (1_000, 1000 * MB, "eager"),
        (20_000_000, 1000 * MB, "lazy"),  # 800 MB frame x 1.45 + fixed costs: ratio ~1.4
        (100_000_000, 1000 * MB, "streaming"),
    ],
)
def test_strategy_follows_the_ratio(rows: int, budget: int, expected: str) -> None:
    """It is eager up to 65% of the budget, lazy up to 200%, streaming beyond."""
    plan = make_plan(profile(rows), budget, base_bytes=100 * MB)
    assert plan.strategy == expected
    assert plan.ratio == pytest.approx(plan.estimate_bytes / budget)


def test_thresholds_are_exact() -> None:
    """A ratio of exactly 0.65 is eager and exactly 2.0 is lazy."""
    p = profile(1_000_000)
    estimate = estimate_eager_bytes(p, 0)
    assert make_plan(p, int(estimate / 0.65) + 1, base_bytes=0).strategy == "eager"
    assert make_plan(p, int(estimate / 0.66), base_bytes=0).strategy == "lazy"
    assert make_plan(p, int(estimate / 2.0) + 1, base_bytes=0).strategy == "lazy"
    assert make_plan(p, int(estimate / 2.01), base_bytes=0).strategy == "streaming"


def test_forced_strategy_wins() -> None:
    """A strategy from the config or command line overrides the ratio, and says so."""
    plan = make_plan(profile(1_000), 1000 * MB, base_bytes=0, forced="streaming")
    assert plan.strategy == "streaming"
    assert plan.forced and "forced" in plan.reason


def test_streaming_batches_fit_the_budget() -> None:
    """Streaming batches, at their measured cost, fit in what the base and fixed costs leave."""
    plan = make_plan(profile(250_000_000), 300 * MB, base_bytes=170 * MB, workers=2)
    assert plan.strategy == "streaming"
    assert MIN_BATCH_BYTES < plan.batch_bytes < MAX_BATCH_BYTES
    used = 170 * MB + FIXED_OVERHEAD + BATCH_COST_FACTOR * plan.batch_bytes
    assert used == pytest.approx(300 * MB, rel=0.01)
    assert plan.batch_rows == int(plan.batch_bytes / 40.0)


def test_batches_are_capped_and_floored() -> None:
    """Plenty of memory does not make batches huge; too little still gives a working minimum."""
    roomy = make_plan(profile(250_000_000), 100_000 * MB, base_bytes=170 * MB, forced="lazy")
    assert roomy.batch_bytes == MAX_BATCH_BYTES
    tight = make_plan(profile(250_000_000), 200 * MB, base_bytes=170 * MB)
    assert tight.batch_bytes == MIN_BATCH_BYTES


def test_eager_estimate_holds_the_whole_frame() -> None:
    """The eager estimate is the base, fixed costs, whole frame and batches in flight."""
    small, large = profile(10**6), profile(10**7)
    grown = estimate_eager_bytes(large, 0) - estimate_eager_bytes(small, 0)
    assert grown == pytest.approx(large.frame_bytes - small.frame_bytes, rel=0.01)
    assert estimate_eager_bytes(small, 100 * MB) - estimate_eager_bytes(small, 0) == 100 * MB


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_large_file_that_fits_loads_lazy(fmt: str) -> None:
    """Eager fits 16 GB, but on an 836 MB frame it is no faster: lazy wins, under 400 MB."""
    lineitem = profile(6_001_215, 139.3, fmt=fmt, row_groups=53)
    plan = make_plan(lineitem, 16_000 * MB, base_bytes=215 * MB)
    assert plan.ratio <= 0.65
    assert plan.strategy == "lazy"
    assert plan.peak_bytes <= 400 * MB
    eager = next(c for c in plan.costs if c.strategy == "eager")
    assert eager.fits and not eager.faster and eager.peak_bytes > 1_000 * MB
    assert "no faster" in plan.reason and "leaner" in plan.reason
    assert plan.batch_bytes == MAX_BATCH_BYTES


def test_a_small_file_that_fits_loads_eager() -> None:
    """Up to a 64 MB frame eager reads the whole file faster, for little more memory."""
    small = profile(1_000_000, 45.0)
    assert small.frame_bytes <= EAGER_FASTER_BELOW
    plan = make_plan(small, 16_000 * MB, base_bytes=215 * MB)
    assert plan.strategy == "eager"
    assert "faster" in plan.reason
    just_over = profile(EAGER_FASTER_BELOW // 40 + 1_000, 40.0)
    assert make_plan(just_over, 16_000 * MB, base_bytes=215 * MB).strategy == "lazy"


def test_a_small_file_past_the_safety_bound_is_not_eager() -> None:
    """However fast eager would be, a ratio over 0.65 rules it out."""
    small = profile(1_000_000, 45.0)
    budget = int(estimate_eager_bytes(small, 215 * MB) / 0.7)
    plan = make_plan(small, budget, base_bytes=215 * MB)
    assert plan.strategy == "lazy" and "65%-200%" in plan.reason


def test_lazy_counts_a_row_group_read_whole() -> None:
    """A row group larger than a batch adds what it holds beyond one batch, up to 4 batches."""
    one_group = profile(10_000_000, 40.0, row_groups=1)  # a 400 MB group: read batch by batch
    many = profile(10_000_000, 40.0, row_groups=200)  # 2 MB groups: smaller than a batch
    batch = MAX_BATCH_BYTES
    base = 0
    floor = FIXED_OVERHEAD + BATCH_COST_FACTOR * batch
    assert estimate_batched_bytes(many, base, batch, GROUP_BATCHES) == int(floor)
    assert estimate_batched_bytes(one_group, base, batch, GROUP_BATCHES) == int(
        floor + (GROUP_BATCHES - 1) * batch
    )
    plan = make_plan(one_group, 16_000 * MB, base_bytes=base)
    assert plan.group_rows == GROUP_BATCHES * plan.batch_rows
    streaming = make_plan(one_group, 16_000 * MB, base_bytes=base, forced="streaming")
    assert streaming.group_rows == streaming.batch_rows


def test_copy_connections_come_from_the_server_facts_alone() -> None:
    """Two COPY connections, one where one writes less: a pure choice over plain values."""
    types = {"id": "bigint", "_loaded_at": "timestamp with time zone", "_run_id": "uuid"}
    wanted = {"id": "bigint", "_loaded_at": "timestamptz", "_run_id": "uuid"}
    replica, minimal = ServerFacts(150020, "replica"), ServerFacts(180001, "minimal")
    assert copy_connections(replica, "replace", wanted) == 2
    assert copy_connections(minimal, "replace", wanted) == 1
    matching = ServerFacts(150020, "replica", types)
    assert copy_connections(matching, "append", wanted) == 1  # straight into the table
    assert copy_connections(matching, "replace", wanted) == 2
    other = ServerFacts(150020, "replica", types | {"id": "integer"})
    assert copy_connections(other, "append", wanted) == 2  # staged, then inserted with casts
    assert copy_connections(ServerFacts(150020, "replica"), "append", wanted) == 2  # no table


def test_the_plan_takes_the_connections_unless_the_config_sets_them() -> None:
    small = profile(rows=1_000, row_bytes=10.0)
    assert make_plan(small, 1 << 30, base_bytes=0, connections=1).workers == 1
    assert make_plan(small, 1 << 30, base_bytes=0, workers=3, connections=1).workers == 3
    assert make_plan(small, 1 << 30, base_bytes=0).workers is None
