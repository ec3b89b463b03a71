"""A run that eases its memory use says so once, then at most once per 30 s, then sums up."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from ingest import load_config, run_source
from ingest.demo import employees
from ingest.runtime.easing import EVERY_SECONDS, EasingNotes


def test_easings_within_the_interval_are_counted_not_said() -> None:
    """100 easings over 90 s give a line at 0 s, 30 s, 60 s and 90 s, and one summary."""
    now = [0.0]
    notes = EasingNotes(budget=100_000_000, clock=lambda: now[0])
    said = []
    for i in range(100):
        now[0] = i * 0.9091
        line = notes.eased(95_000_000 + i * 10_000, 1 << 20, drain=True)
        if line is not None:
            said.append((round(now[0]), line))
    assert [t for t, _ in said] == [0, 30, 60, 90]
    assert said[0][1] == (
        "memory reached 95 MB of the 100 MB budget: encoding in 1 MB pieces, draining the queue"
    )
    assert said[1][1].endswith("(33 easings since the last note)")
    summary = notes.summary()
    assert summary is not None and summary.endswith("(100 easing(s), 100 drain(s))")
    assert summary.startswith("memory reached 96 MB of the 100 MB budget")


def test_a_quiet_easing_says_nothing() -> None:
    """An easing that changes nothing (same piece, no drain) and none unsaid gets no line."""
    notes = EasingNotes(budget=100, clock=lambda: 1_000.0)
    assert notes.eased(90, 1 << 20, drain=False) is not None  # the piece size changed
    notes._last_said = 0.0  # long ago: the interval is over
    assert notes.eased(91, 1 << 20, drain=False) is None
    assert EasingNotes(budget=1).summary() is None


def test_a_memory_limited_run_does_not_print_every_easing(
    tmp_path: Path, database_url: str, pg_schema: str
) -> None:
    """Under a tight budget the run prints the first easing and one summary, whatever the count."""
    data = tmp_path / "e.parquet"
    employees(400_000).write_parquet(data, row_group_size=20_000)
    cfg = tmp_path / "tight.yml"
    cfg.write_text(f"""
path: {{input_path: '{data}'}}
database:
  table_name: employees
  schema: {pg_schema}
  metadata_schema: {pg_schema}
  url: '{database_url}'
""")
    out = io.StringIO()
    report = run_source(
        load_config(cfg),
        progress=False,
        memory_limit=100_000_000,
        console=Console(file=out, width=200),
    )
    assert report.execution_time < EVERY_SECONDS  # so no second note is due
    printed = [line for line in out.getvalue().splitlines() if line.startswith("memory reached")]
    notes = [n for n in report.notes if n.startswith("memory reached")]
    assert len(notes) == 1, report.notes
    found = re.search(r"\((\d[\d,]*) easing\(s\)", notes[0])
    assert found, notes[0]
    easings = int(found.group(1).replace(",", ""))
    # How often the run eases depends on how RSS moves (after the pieces reach their floor it
    # eases again only on a new RSS high); the rationing itself is tested above. Either way
    # it prints at most two lines: the first easing, and the summary if there was more than one.
    assert printed, out.getvalue()
    if easings == 1:
        assert len(printed) == 1 and notes[0].startswith(printed[0]), (printed, notes)
    else:
        assert len(printed) == 2 and printed[-1] == notes[0], (printed, notes)
