"""Progress on stderr for long loads: a live bar on a terminal, periodic log lines elsewhere."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

LOG_EVERY_SECONDS = 10.0
# The full line's width; a narrower terminal gets the compact one, which keeps bar and ETA.
FULL_WIDTH = 150
COMPACT_TEXT = 56  # the compact line without its bar


def short_number(n: float) -> str:
    """`950`, `12.5k`, `3.46M`: a count that fits a narrow terminal."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            value = n / limit
            return f"{value:.3g}{suffix}" if value < 100 else f"{value:.0f}{suffix}"
    return f"{n:.0f}"


def clock(seconds: float | None) -> str:
    """`0:01:05` (`-:--:--` while unknown)."""
    if seconds is None:
        return "-:--:--"
    whole = int(seconds + 0.5)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def progress_columns(width: int) -> list[ProgressColumn]:
    """The bar's columns for a terminal this wide: everything, or bar, %, rows, rate, RSS, ETA."""
    if width >= FULL_WIDTH:
        return [
            TextColumn("[bold]loading"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"),
            TextColumn("{task.fields[mb]:,.0f} MB sent"),
            TextColumn("{task.fields[rate]:,.0f} rows/s"),
            TextColumn("RSS {task.fields[rss]:,.0f}/{task.fields[budget]:,.0f} MB"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
        ]
    return [
        BarColumn(bar_width=min(max(width - COMPACT_TEXT, 8), 40)),
        TaskProgressColumn(),
        TextColumn("{task.fields[done]}/{task.fields[todo]} rows"),
        TextColumn("{task.fields[speed]}/s"),
        TextColumn("RSS {task.fields[rss]:,.0f}/{task.fields[budget]:,.0f} MB"),
        TextColumn("ETA {task.fields[eta]}"),
    ]


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
                *progress_columns(self.console.width), console=self.console, transient=True
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(
                "load",
                total=self.total,
                rate=0.0,
                rss=0.0,
                mb=0.0,
                budget=self.budget / 1e6,
                eta=clock(None),
                done="0",
                todo=short_number(self.total),
                speed="0",
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
        total = max(self.total, rows)  # a CSV's row count is an estimate
        eta = (total - rows) / rate if rate else None
        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task,
                completed=rows,
                total=total,
                rate=rate,
                rss=rss / 1e6,
                mb=sent_bytes / 1e6,
                eta=clock(eta),
                done=short_number(rows),
                todo=short_number(total),
                speed=short_number(rate),
            )
        elif self.enabled and now - self._last_log >= LOG_EVERY_SECONDS:
            self._last_log = now
            share = min(rows / self.total, 1.0)
            self.console.print(
                f"loaded {rows:,} rows (~{share:.0%}), {sent_bytes / 1e6:,.0f} MB sent, "
                f"{rate:,.0f} rows/s, ETA {eta or 0:,.0f} s, RSS {rss / 1e6:,.0f} of "
                f"{self.budget / 1e6:,.0f} MB",
                markup=False,
                highlight=False,
            )
