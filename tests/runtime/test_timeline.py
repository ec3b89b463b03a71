"""The timeline samples rows and RSS on its own thread and records phases, also failed ones."""

from __future__ import annotations

import itertools
import time

import pytest

from ingest.runtime.memory import RssWatch
from ingest.runtime.timeline import Timeline


def test_it_samples_rows_rate_and_rss_at_its_interval() -> None:
    """Samples come at the interval; each rate is the rows since the last sample over the time."""
    done = [0]
    with RssWatch() as watch, Timeline(watch, interval=0.05) as timeline:
        timeline.count_rows(lambda: done[0])
        for _ in range(10):
            done[0] += 1_000
            time.sleep(0.03)
        timeline.sample()
    samples = timeline.samples()
    assert len(samples) >= 5 and samples[0].rows == 0 and samples[-1].rows == 10_000
    for before, after in itertools.pairwise(samples):
        assert after.elapsed_s > before.elapsed_s
        expected = (after.rows - before.rows) / (after.elapsed_s - before.elapsed_s)
        assert after.rows_per_s == pytest.approx(expected, rel=0.02, abs=100)
        assert after.rss_bytes > 10_000_000


def test_a_phase_that_raises_is_still_recorded() -> None:
    """The phase ends where the exception left it, and later phases follow in order."""
    with RssWatch() as watch, Timeline(watch) as timeline:
        with pytest.raises(ValueError), timeline.phase("profile"):
            time.sleep(0.02)
            raise ValueError("bad file")
        with timeline.phase("plan"):
            pass
    profile, plan = timeline.phases()
    assert (profile.name, plan.name) == ("profile", "plan")
    assert 0.015 <= profile.seconds < 1 and plan.start_s >= profile.end_s
