"""Say that a run is easing its memory use without a line for every easing.

A run near its budget may ease (shrink its pieces, drain its queue) after every batch. The
first easing is said at once; later ones at most once per `EVERY_SECONDS`, each line saying how
many it stands for; the run ends with one summary line for the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

EVERY_SECONDS = 30.0


@dataclass
class EasingNotes:
    """Counts a run's easings and decides which of them get a line."""

    budget: int
    every: float = EVERY_SECONDS
    clock: Callable[[], float] = time.monotonic
    easings: int = 0
    drains: int = 0
    peak: int = 0
    piece: int = 0
    _last_said: float | None = field(default=None, repr=False)
    _unsaid: int = field(default=0, repr=False)

    def eased(self, rss: int, piece: int, drain: bool) -> str | None:
        """Count one easing; return the line to print now, or None to keep quiet."""
        self.easings += 1
        self.drains += drain
        self.peak = max(self.peak, rss)
        changed = piece != self.piece
        self.piece = piece
        now = self.clock()
        if self._last_said is not None and now - self._last_said < self.every:
            self._unsaid += 1
            return None
        if not (changed or drain or self._unsaid):
            return None
        since = f" ({self._unsaid + 1} easings since the last note)" if self._unsaid else ""
        self._last_said, self._unsaid = now, 0
        return self._line(rss, drain) + since

    def _line(self, rss: int, drain: bool) -> str:
        return (
            f"memory reached {rss / 1e6:,.0f} MB of the {self.budget / 1e6:,.0f} MB budget: "
            f"encoding in {self.piece / 1e6:.0f} MB pieces"
            + (", draining the queue" if drain else "")
        )

    def summary(self) -> str | None:
        """One line for the whole run (None if it never eased)."""
        if not self.easings:
            return None
        drained = f", {self.drains:,} drain(s)" if self.drains else ""
        return f"{self._line(self.peak, self.drains > 0)} ({self.easings:,} easing(s){drained})"
