"""Pick eager, lazy or streaming loading and a batch size: pure arithmetic, no I/O.

The original design's ratios (eager estimate / budget: 0.65 and 2.0) are the safety bounds: a
strategy is only ever chosen where it fits. Within them, `auto` weighs what each strategy
costs in memory and time (`costs`) and takes the leaner one unless the other is measurably
faster.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ingest.stages.profile import FileProfile
from ingest.stages.types import type_mismatches

EAGER_MAX_RATIO = 0.65
LAZY_MAX_RATIO = 2.0
# Measured on this project's own loads (see `invoke bench`), not guessed. Streaming the 5-column
# table with a 215 MB base at plan time peaked 62 MB above it with 1 MB batches and 154 MB above
# it with 8 MB batches: about 49 MB + 13 x the batch, plus a 15 MB margin (RSS moves by ~10 MB
# between runs).
# - threads, connections, pools and scratch cost about this much whatever the file;
FIXED_OVERHEAD = 64 << 20
# - a batch in flight (read, checked, queued, being encoded by each worker) costs about this many
#   times its estimated frame bytes;
BATCH_COST_FACTOR = 13.0
# - an eager load reads ahead of the COPY without bound: at worst the whole frame is held. That
#   is the estimate for CSV too, though its parsing keeps closer pace with the COPY: with more
#   cores, or a faster parser, the whole frame piles up (lineitem SF1's CSV peaked at 572 to
#   1,003 MB on 2 cores, its frame being 836 MB).
MIN_BATCH_BYTES = 1 << 20
# Batches past this size buy no speed (the server is the bottleneck), only memory.
MAX_BATCH_BYTES = 8 << 20
# A row group up to this many batches is decoded whole (at about half the CPU of reading it in
# batch-sized slices); a larger one is read a batch at a time, so memory stays bounded.
GROUP_BATCHES = 4
# Speed: the PostgreSQL backends are the bottleneck (README, "What decides the race"), so a
# reader that keeps a few batches ahead is as fast as one that reads the whole file ahead.
# Measured on 2 cores, alternated: lineitem SF1 Parquet lazy 8.6 s at 310 MB against eager
# 9.1 s at 1,209 MB; its CSV lazy 42.2 and 48.2 s at 309-316 MB against eager 56.8 and 70.2 s at
# 1,060-1,147 MB on a loaded machine. Eager was faster only on small files, where the whole
# frame decodes on threads before the first COPY has warmed up: 1M rows of the 5-column table
# (45 MB frame) 3.8-4.0 s eager against 4.7-5.1 s lazy, for 10 MB more. Up to this frame size
# eager is counted faster; beyond it the two tie, and the leaner one wins.
EAGER_FASTER_BELOW = 64 << 20


@dataclass(frozen=True)
class StrategyCost:
    """What one strategy would cost on this file: its peak RSS and whether it may be used."""

    strategy: str
    peak_bytes: int
    fits: bool  # within the original design's safety bound for this strategy
    faster: bool  # measurably faster than the leaner strategies on a file like this one


@dataclass(frozen=True)
class Plan:
    """How one file will be loaded, and why."""

    strategy: str
    estimate_bytes: int
    budget_bytes: int
    ratio: float
    batch_rows: int
    batch_bytes: int
    workers: int | None  # COPY connections; None: chosen from the server's version on connecting
    forced: bool
    reason: str
    chunk_bytes: int = MIN_BATCH_BYTES
    base_bytes: int = 0  # the process's RSS when it planned, before reading data
    costs: tuple[StrategyCost, ...] = ()
    # Largest row group decoded whole; a larger one is read batch by batch.
    group_rows: int = 0

    @property
    def peak_bytes(self) -> int:
        """The estimated peak RSS of the chosen strategy."""
        chosen = [c.peak_bytes for c in self.costs if c.strategy == self.strategy]
        return chosen[0] if chosen else self.estimate_bytes


@dataclass(frozen=True)
class ServerFacts:
    """The server and target table as they were when the run started; a plain value.

    Attributes:
        version: `server_version_num`, e.g. 150020.
        wal_level: `minimal`, `replica` or `logical`.
        target_types: the target's columns and types as `format_type` spells them; empty
            when there is no table yet.
    """

    version: int
    wal_level: str
    target_types: dict[str, str] = field(default_factory=dict)


def memory_budget(available: int, os_margin: float, limit: int | None = None) -> int:
    """Bytes the load may use: an explicit limit, else available RAM less the OS margin."""
    if limit is not None:
        return limit
    return int(available * (1 - os_margin))


def estimate_eager_bytes(profile: FileProfile, base_bytes: int) -> int:
    """Peak RSS of loading the whole file into one frame, including the process's own base."""
    batches = BATCH_COST_FACTOR * min(MAX_BATCH_BYTES, profile.frame_bytes)
    return int(base_bytes + FIXED_OVERHEAD + profile.frame_bytes + batches)


def estimate_batched_bytes(
    profile: FileProfile, base_bytes: int, batch_bytes: int, group_batches: int = 1
) -> int:
    """Peak RSS of reading as the load asks: the batches in flight, and a row group read whole.

    A Parquet row group of up to `group_batches` batches is decoded whole, so up to that much
    more than one batch sits decoded beside the batches in flight.
    """
    batch = min(batch_bytes, profile.frame_bytes)
    group = profile.frame_bytes / max(profile.row_groups, 1) if profile.format == "parquet" else 0
    extra = max(min(group, group_batches * batch) - batch, 0)
    return int(base_bytes + FIXED_OVERHEAD + BATCH_COST_FACTOR * batch + extra)


def _batch_bytes(budget: int, base: int) -> int:
    room = (budget - base - FIXED_OVERHEAD) / BATCH_COST_FACTOR
    return int(min(max(room, MIN_BATCH_BYTES), MAX_BATCH_BYTES))


def costs(
    profile: FileProfile, budget_bytes: int, base_bytes: int
) -> tuple[StrategyCost, StrategyCost, StrategyCost]:
    """Eager, lazy and streaming on this file: estimated peak, safety bound, and speed."""
    eager = estimate_eager_bytes(profile, base_bytes)
    ratio = eager / budget_bytes if budget_bytes > 0 else float("inf")
    batched = estimate_batched_bytes(profile, base_bytes, MAX_BATCH_BYTES, GROUP_BATCHES)
    small = _batch_bytes(budget_bytes, base_bytes)
    return (
        StrategyCost(
            "eager", eager, ratio <= EAGER_MAX_RATIO, profile.frame_bytes <= EAGER_FASTER_BELOW
        ),
        StrategyCost("lazy", batched, ratio <= LAZY_MAX_RATIO, False),
        StrategyCost("streaming", estimate_batched_bytes(profile, base_bytes, small), True, False),
    )


def _choose(options: tuple[StrategyCost, ...], ratio: float) -> tuple[str, str]:
    """The fastest strategy that fits; among equally fast ones, the leanest."""
    eager, lazy, _ = options
    share = f"the eager estimate is {ratio:.0%} of the budget"
    if not lazy.fits:
        return "streaming", f"{share} (> 200%)"
    if not eager.fits:
        return "lazy", f"{share} (65%-200%)"
    if eager.faster:
        return "eager", (
            f"{share} (<= 65%) and the frame is small enough that reading it whole is faster"
            f" (~{eager.peak_bytes / 1e6:,.0f} MB against lazy's ~{lazy.peak_bytes / 1e6:,.0f} MB)"
        )
    return "lazy", (
        f"{share} (<= 65%), but eager (~{eager.peak_bytes / 1e6:,.0f} MB) would be no faster"
        f" than lazy (~{lazy.peak_bytes / 1e6:,.0f} MB), the leaner"
    )


def copy_connections(facts: ServerFacts, if_exists: str, append_types: dict[str, str]) -> int:
    """COPY connections when the config names none: two, unless one writes less.

    - An append into an existing table that has the load's column types (`append_types`, as
      `type_mismatches` compares them) takes one: it COPYs straight into the table and writes
      each row once, where several connections stage the rows and insert them again. Lineitem
      SF1 appended to itself: 12 s against 22 to 25 s on PostgreSQL 18, 23 to 26 s against 41
      to 43 s on 15. An append that must stage anyway keeps two.
    - With `wal_level=minimal`, one connection that creates the table in its own transaction
      skips the WAL: 92 s against 102 s for 244M rows on the embedded PostgreSQL 18.
    - Otherwise two connections share the server's work. Up to PostgreSQL 15 a table grows a
      page at a time under a lock the two wait on, yet two still came out ahead on lineitem
      SF1 in each of three sessions and on 244M rows in two of three (see the README).
    """
    if if_exists == "append" and facts.target_types:
        if not type_mismatches(facts.target_types, append_types):
            return 1
    return 1 if facts.wal_level == "minimal" else 2


def _one_stream(profile: FileProfile, ratio: float) -> str:
    """Why compressed text streams whatever its estimate says."""
    return (
        f"{profile.compression}-compressed, so read as one stream, and profiled from the head "
        "of its text (a compressed stream cannot be sampled spread through it cheaply): its "
        f"rows and widths are estimates, so it streams (estimate is {ratio:.0%} of the budget)"
    )


def make_plan(
    profile: FileProfile,
    budget_bytes: int,
    *,
    base_bytes: int,
    workers: int | None = None,
    forced: str = "auto",
    connections: int | None = None,
) -> Plan:
    """Choose the strategy by what each costs, within the ratio's safety bounds.

    Args:
        profile: what the file holds.
        budget_bytes: the memory the whole process may use.
        base_bytes: the RSS the process already has before reading data.
        workers: COPY connections the config sets, or None to choose them.
        connections: the choice `copy_connections` made from the server's facts; None before
            connecting (`invoke plan`), when the plan leaves them open.
        forced: `auto`, or a strategy the config or command line insists on.

    Returns:
        The plan: streaming past a ratio of 2.0, lazy past 0.65; up to 0.65 eager only on files
        small enough for it to be measurably faster, else lazy, which is as fast and leaner.
    """
    options = costs(profile, budget_bytes, base_bytes)
    estimate = options[0].peak_bytes
    ratio = estimate / budget_bytes if budget_bytes > 0 else float("inf")
    if forced != "auto":
        strategy, reason = forced, f"forced to {forced} by configuration"
    elif profile.compression != "none":
        strategy, reason = "streaming", _one_stream(profile, ratio)
    else:
        strategy, reason = _choose(options, ratio)
    # eager slices a frame already in memory; the others read as they go, within the budget.
    batch = MAX_BATCH_BYTES if strategy == "eager" else _batch_bytes(budget_bytes, base_bytes)
    row_bytes = max(profile.row_bytes, 1.0)
    batch_rows = max(int(batch / row_bytes), 1_000)
    return Plan(
        strategy=strategy,
        estimate_bytes=estimate,
        budget_bytes=budget_bytes,
        ratio=ratio,
        batch_rows=batch_rows,
        batch_bytes=batch,
        workers=workers or connections,
        forced=forced != "auto",
        reason=reason,
        chunk_bytes=batch,
        base_bytes=base_bytes,
        costs=options,
        # Streaming keeps to one batch's worth; the others may decode a few batches at once.
        group_rows=batch_rows * (1 if strategy == "streaming" else GROUP_BATCHES),
    )
