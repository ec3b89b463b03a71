"""Pick eager, lazy or streaming loading and a batch size: pure arithmetic, no I/O."""

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


def _batch_bytes(budget: int, base: int) -> int:
    room = (budget - base - FIXED_OVERHEAD) / BATCH_COST_FACTOR
    return int(min(max(room, MIN_BATCH_BYTES), MAX_BATCH_BYTES))


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


def make_plan(
    profile: FileProfile,
    budget_bytes: int,
    *,
    base_bytes: int,
    workers: int | None = None,
    forced: str = "auto",
    connections: int | None = None,
) -> Plan:
    """Choose the strategy by the ratio of the eager estimate to the budget.

    Args:
        profile: what the file holds.
        budget_bytes: the memory the whole process may use.
        base_bytes: the RSS the process already has before reading data.
        workers: COPY connections the config sets, or None to choose them.
        connections: the choice `copy_connections` made from the server's facts; None before
            connecting (`invoke plan`), when the plan leaves them open.
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
    )
