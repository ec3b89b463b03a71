"""A run's timeline: rows done, rows/s and RSS sampled about once a second, and its phases.

The run report plots the samples and the phases; the ledger keeps them with the run
(`ingest.state.runlog`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ingest.runtime.memory import RssWatch

SAMPLE_SECONDS = 1.0
# A run of hours at one sample a second stays a few hundred kB in the ledger.
MAX_SAMPLES = 100_000


@dataclass(frozen=True)
class Sample:
    """How far the run was `elapsed_s` seconds after it started."""

    elapsed_s: float
    rows: int
    rows_per_s: float  # since the previous sample
    rss_bytes: int


@dataclass(frozen=True)
class Phase:
    """One stretch of the run (profile, plan, read/COPY, commit), in seconds from its start."""

    name: str
    start_s: float
    end_s: float

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s


class Timeline:
    """Samples the run on a background thread and records its phases.

    Use as a context manager around the run. `count_rows` says where rows done come from (the
    loader's counter, once it exists); until then they are 0.
    """

    def __init__(self, watch: RssWatch, interval: float = SAMPLE_SECONDS) -> None:
        self.watch = watch
        self.interval = interval
        self.started = time.monotonic()
        self._rows: Callable[[], int] = lambda: 0
        self._samples: list[Sample] = []
        self._phases: list[Phase] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)

    def __enter__(self) -> Timeline:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def count_rows(self, rows: Callable[[], int]) -> None:
        """Read rows done from `rows` from now on."""
        self._rows = rows

    def sample(self) -> Sample:
        """Take a sample now (the thread does once a second; the run at its end)."""
        now, rows, rss = time.monotonic(), self._rows(), self.watch.latest
        with self._lock:
            previous = self._samples[-1] if self._samples else None
            elapsed = round(now - self.started, 3)
            rate = 0.0
            if previous is not None:
                # Two samples in one millisecond (the run's last one, right after the thread's)
                # would share a time: keep the series strictly ordered, and the rate its slope.
                elapsed = max(elapsed, round(previous.elapsed_s + 0.001, 3))
                rate = max(rows - previous.rows, 0) / (elapsed - previous.elapsed_s)
            taken = Sample(elapsed, rows, round(rate, 1), rss)
            if len(self._samples) < MAX_SAMPLES:
                self._samples.append(taken)
        return taken

    def add_phase(self, name: str, started: float, ended: float) -> None:
        """Record a phase from two `time.monotonic()` readings."""
        with self._lock:
            self._phases.append(
                Phase(name, round(started - self.started, 3), round(ended - self.started, 3))
            )

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Record the block as a phase, also when it raises."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.add_phase(name, started, time.monotonic())

    def samples(self) -> list[Sample]:
        """The samples so far, oldest first."""
        with self._lock:
            return list(self._samples)

    def phases(self) -> list[Phase]:
        """The phases so far, in the order they ended."""
        with self._lock:
            return list(self._phases)


@contextmanager
def phase(timeline: Timeline | None, name: str) -> Iterator[None]:
    """`timeline.phase(name)`, or nothing without a timeline."""
    if timeline is None:
        yield
        return
    with timeline.phase(name):
        yield


class LoadPhases:
    """Times a load's read/COPY and commit: from entering to `copied()`, and from there on.

    Leaving without `copied()` (the load failed while reading) records read/COPY up to then.
    """

    def __init__(self, timeline: Timeline | None, rows: Callable[[], int]) -> None:
        self.timeline = timeline
        self.rows = rows
        self.started = time.monotonic()
        self._copied: float | None = None

    def __enter__(self) -> LoadPhases:
        self.started = time.monotonic()
        if self.timeline is not None:
            self.timeline.count_rows(self.rows)
        return self

    def copied(self) -> None:
        """Every row is in the staging table: the commit starts."""
        self._copied = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        if self.timeline is None:
            return
        now = time.monotonic()
        self.timeline.add_phase("read/COPY", self.started, self._copied or now)
        if self._copied is not None:
            self.timeline.add_phase("commit", self._copied, now)
