"""Progress: an 80-column terminal keeps the bar and the ETA; a log line says the ETA too."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from ingest.runtime.progress import FULL_WIDTH, LoadProgress, clock, short_number


def _shown(width: int, *, terminal: bool = True) -> str:
    """What a load 10 s in, 2.5M of 10M rows done, leaves on a console this wide."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=terminal, color_system=None)
    progress = LoadProgress(console, 10_000_000, 400_000_000, enabled=True)
    progress.started -= 10
    progress._last_log -= 60  # the log line is due (it comes every 10 s)
    with progress:
        progress.update(2_500_000, 123_000_000, 250_000_000)
        if progress._bar is not None:
            progress._bar.refresh()
    return buf.getvalue()


@pytest.mark.parametrize("width", [60, 80, 100, FULL_WIDTH - 1, FULL_WIDTH, 200])
def test_the_bar_and_the_eta_fit_the_terminal(width: int) -> None:
    """At every width the last frame has a bar, 25%, the ETA (30 s left) and fits the width."""
    frames = [f for f in re.split(r"[\r\n]", _shown(width)) if "ETA" in f]
    assert frames, "no frame with an ETA"
    last = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", frames[-1]).rstrip()
    assert len(last) <= width, last
    assert re.search(r"━[━╸ ]{7,} +25%", last), last  # a bar at least 8 wide, a quarter full
    assert "25%" in last and re.search(r"ETA 0:00:(29|30)\b", last), last
    assert ("RSS 250/400 MB" in last) and ("rows" in last)


def test_a_log_line_off_a_terminal_names_the_eta() -> None:
    """Without a terminal, the periodic line says rows, rate and ETA in seconds."""
    text = _shown(200, terminal=False)
    assert re.search(r"loaded 2,500,000 rows \(~25%\).* ETA (29|30) s, RSS 250 of 400 MB", text)


@pytest.mark.parametrize(
    ("value", "short"), [(950, "950"), (12_500, "12.5k"), (3_456_789, "3.46M"), (250e6, "250M")]
)
def test_short_numbers(value: float, short: str) -> None:
    """Counts shrink to three digits and a suffix."""
    assert short_number(value) == short


def test_clock() -> None:
    """Seconds read as h:mm:ss; unknown as dashes."""
    assert (clock(65.4), clock(3_600 * 2 + 5), clock(None)) == ("0:01:05", "2:00:05", "-:--:--")
