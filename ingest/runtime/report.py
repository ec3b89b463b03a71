"""What a run did, as one JSON object for machines or a short summary for people."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ingest.runtime.memory import format_size


@dataclass(frozen=True)
class RunReport:
    """The outcome of loading one source."""

    run_id: str
    source: str
    file: str
    format: str
    table: str
    strategy: str
    status: str
    total_rows: int
    rows_loaded: int
    rows_rejected: int
    execution_time: float
    memory_used_mb: float
    estimate_mb: float
    budget_mb: float
    batch_rows: int
    workers: int
    validation: dict[str, Any] = field(default_factory=dict)
    # A merge's counts: inserted, updated, unchanged, deleted, duplicates (and skipped).
    merge: dict[str, int] = field(default_factory=dict)
    rows_skipped: int = 0  # at or below the incremental cursor's high-water mark
    steps: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @classmethod
    def combine(cls, reports: Sequence[RunReport], pattern: str) -> RunReport:
        """One report for the runs of a glob: totals, the worst memory, a note per file."""
        loaded = [r for r in reports if r.status == "success"]
        last = (loaded or list(reports))[-1]
        notes = tuple(
            f"{Path(r.file).name}: {r.status}, {r.rows_loaded:,} rows loaded" for r in reports
        )
        return replace(
            last,
            file=pattern,
            status="success" if loaded else "skipped",
            total_rows=sum(r.total_rows for r in reports),
            rows_loaded=sum(r.rows_loaded for r in reports),
            rows_rejected=sum(r.rows_rejected for r in reports),
            execution_time=round(sum(r.execution_time for r in reports), 3),
            memory_used_mb=max(r.memory_used_mb for r in reports),
            merge=_summed([r.merge for r in reports]),
            rows_skipped=sum(r.rows_skipped for r in reports),
            notes=notes,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data

    def to_json(self) -> str:
        """One line of JSON."""
        return json.dumps(self.to_dict(), default=str)

    def summary(self) -> str:
        """A few lines for a terminal."""
        rate = self.rows_loaded / self.execution_time if self.execution_time else 0.0
        lines = [
            f"{self.status}: {self.rows_loaded:,} of {self.total_rows:,} rows from {self.file} "
            f"into {self.table} ({self.strategy}, {self.workers} connection(s))",
            f"  {self.execution_time:.2f} s ({rate:,.0f} rows/s), peak memory "
            f"{self.memory_used_mb:,.0f} MB of a {self.budget_mb:,.0f} MB budget "
            f"(estimate {self.estimate_mb:,.0f} MB)",
        ]
        if self.rows_rejected:
            lines.append(f"  {self.rows_rejected:,} rows rejected")
        if self.rows_skipped:
            lines.append(f"  {self.rows_skipped:,} rows skipped (at or below the cursor's mark)")
        if self.merge:
            lines.append("  merge: " + ", ".join(f"{v:,} {k}" for k, v in self.merge.items()))
        if self.steps:
            lines.append("  steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in self.steps.items()))
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def _summed(counts: Sequence[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in counts:
        for name, value in one.items():
            total[name] = total.get(name, 0) + value
    return total


def mb(n: float) -> float:
    """Bytes to megabytes (10^6), rounded for reports."""
    return round(n / 1e6, 1)


__all__ = ["RunReport", "format_size", "mb"]
