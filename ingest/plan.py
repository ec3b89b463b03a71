"""Pick eager, lazy or streaming loading and a batch size: pure arithmetic, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from ingest.profile import FileProfile

EAGER_MAX_RATIO = 0.65
LAZY_MAX_RATIO = 2.0
MIN_BATCH_BYTES = 4 << 20
MAX_BATCH_BYTES = 128 << 20
# A batch in flight costs its frame, its prepared copy and its encoded COPY bytes.
BATCH_COST_FACTOR = 3.0
# Reading a whole CSV holds the raw text alongside the parsed frame for a while.
CSV_EAGER_FACTOR = 1.6
PARQUET_EAGER_FACTOR = 1.3


@dataclass(frozen=True)
class Plan:
    """How one file will be loaded, and why."""

    strategy: str
    estimate_bytes: int
    budget_bytes: int
    ratio: float
    batch_rows: int
    batch_bytes: int
    workers: int
    forced: bool
    reason: str
    chunk_bytes: int = MIN_BATCH_BYTES


def memory_budget(available: int, os_margin: float, limit: int | None = None) -> int:
    """Bytes the load may use: an explicit limit, else available RAM less the OS margin."""
    if limit is not None:
        return limit
    return int(available * (1 - os_margin))


def estimate_eager_bytes(profile: FileProfile, base_bytes: int) -> int:
    """Peak RSS of loading the whole file into one frame, including the process's own base."""
    factor = CSV_EAGER_FACTOR if profile.format == "csv" else PARQUET_EAGER_FACTOR
    return int(base_bytes + profile.frame_bytes * factor)


def _batch_bytes(budget: int, base: int, workers: int) -> int:
    in_flight = workers + 2  # one per COPY worker, one being read, one queued
    room = max(budget - base, 0) / (BATCH_COST_FACTOR * in_flight)
    return int(min(max(room, MIN_BATCH_BYTES), MAX_BATCH_BYTES))


def make_plan(
    profile: FileProfile,
    budget_bytes: int,
    *,
    base_bytes: int,
    workers: int = 2,
    forced: str = "auto",
) -> Plan:
    """Choose the strategy by the ratio of the eager estimate to the budget.

    Args:
        profile: what the file holds.
        budget_bytes: the memory the whole process may use.
        base_bytes: the RSS the process already has before reading data.
        workers: parallel COPY connections.
        forced: `auto`, or a strategy the config or command line insists on.

    Returns:
        The plan; ratio <= 0.65 is eager, <= 2.0 lazy, else streaming.
    """
    estimate = estimate_eager_bytes(profile, base_bytes)
    ratio = estimate / budget_bytes if budget_bytes > 0 else float("inf")
    if forced != "auto":
        strategy, reason = forced, f"forced to {forced} by configuration"
    elif ratio <= EAGER_MAX_RATIO:
        strategy, reason = "eager", f"estimate is {ratio:.0%} of the budget (<= 65%)"
    elif ratio <= LAZY_MAX_RATIO:
        strategy, reason = "lazy", f"estimate is {ratio:.0%} of the budget (65%-200%)"
    else:
        strategy, reason = "streaming", f"estimate is {ratio:.0%} of the budget (> 200%)"
    batch = _batch_bytes(budget_bytes, base_bytes, workers)
    if strategy == "eager":
        batch = MAX_BATCH_BYTES // 2  # the frame is already in memory; slices only pace the COPY
    row_bytes = max(profile.row_bytes, 1.0)
    batch_rows = max(int(batch / row_bytes), 1_000)
    return Plan(
        strategy=strategy,
        estimate_bytes=estimate,
        budget_bytes=budget_bytes,
        ratio=ratio,
        batch_rows=batch_rows,
        batch_bytes=batch,
        workers=workers,
        forced=forced != "auto",
        reason=reason,
        chunk_bytes=min(batch, MAX_BATCH_BYTES // 2),
    )
