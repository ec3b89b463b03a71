"""How many partitions the local executor stages at once, and how they share the plan."""

from __future__ import annotations

from ingest.executors.staged import IN_FLIGHT, in_flight, shared
from ingest.stages.plan import make_plan
from tests.stages.test_plan import MB, profile


def test_a_streaming_plan_stages_one_partition_at_a_time() -> None:
    """Streaming means the budget holds a few small batches only: a second reader, with its row
    group's pages, does not fit (50M rows under 300MB peaked 320 MB with two, 285 MB with one)."""
    tight = make_plan(profile(250_000_000), 300 * MB, base_bytes=200 * MB)
    assert tight.strategy == "streaming"
    assert in_flight(tight) == 1
    assert shared(tight, in_flight(tight)) == tight  # one task keeps the whole plan


def test_other_plans_stage_two_at_a_time_sharing_the_batches() -> None:
    roomy = make_plan(profile(20_000_000), 1000 * MB, base_bytes=100 * MB)
    assert roomy.strategy == "lazy" and in_flight(roomy) == IN_FLIGHT == 2
    each = shared(roomy, in_flight(roomy))
    assert each.batch_rows == roomy.batch_rows // 2
    assert each.group_rows == roomy.group_rows // 2
