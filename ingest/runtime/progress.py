"""Progress on stderr for long loads: a live bar on a terminal, periodic log lines elsewhere."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

LOG_EVERY_SECONDS = 10.0


class LoadProgress:
    """Shows rows, bytes, % done, ETA, rows/s and RSS against the budget."""

    def __init__(self, console: Console, total_rows: int, budget_bytes: int, enabled: bool) -> None:
        self.console = console
        self.total = max(total_rows, 1)
        self.budget = budget_bytes
        self.enabled = enabled
        self.started = time.monotonic()
        self._last_log = self.started
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> LoadProgress:
        if self.enabled and self.console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]loading"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"),
                TextColumn("{task.fields[mb]:,.0f} MB sent"),
                TextColumn("{task.fields[rate]:,.0f} rows/s"),
                TextColumn("RSS {task.fields[rss]:,.0f}/{task.fields[budget]:,.0f} MB"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(
                "load", total=self.total, rate=0.0, rss=0.0, mb=0.0, budget=self.budget / 1e6
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)

    def update(self, rows: int, sent_bytes: int, rss: int) -> None:
        """Record how far the load is."""
        now = time.monotonic()
        rate = rows / max(now - self.started, 1e-6)
        if self._bar is not None and self._task is not None:
            total = max(self.total, rows)  # a CSV's row count is an estimate
            self._bar.update(
                self._task,
                completed=rows,
                total=total,
                rate=rate,
                rss=rss / 1e6,
                mb=sent_bytes / 1e6,
            )
        elif self.enabled and now - self._last_log >= LOG_EVERY_SECONDS:
            self._last_log = now
            share = min(rows / self.total, 1.0)
            eta = (self.total - rows) / rate if rate and rows < self.total else 0.0
            self.console.print(
                f"loaded {rows:,} rows (~{share:.0%}), {sent_bytes / 1e6:,.0f} MB sent, "
                f"{rate:,.0f} rows/s, ETA {eta:,.0f} s, RSS {rss / 1e6:,.0f} of "
                f"{self.budget / 1e6:,.0f} MB",
                markup=False,
                highlight=False,
            )
