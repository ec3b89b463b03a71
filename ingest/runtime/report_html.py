"""A run report as one self-contained HTML page: inline CSS and SVG, no script, no network."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from ingest.errors import RunNotFound
from ingest.pg.db import connect
from ingest.pg.target import Target
from ingest.runtime.memory import format_size
from ingest.runtime.paths import state_dir
from ingest.runtime.svgchart import Band, Level, Line, line_chart, phase_bars, phase_colour
from ingest.runtime.timeline import Sample
from ingest.state import ledger, runlog
from ingest.state.ledger import RunRow
from ingest.state.runlog import RejectRule, RunFacts

BUDGET_COLOUR = "#c1121f"
ESTIMATE_COLOUR = "#6a4c93"
NONE = "&ndash;"
PHASES = {
    "profile": "reads the schema and a sample, counts or estimates the rows",
    "plan": "sets the memory budget, the strategy and the batch size",
    "prepare": "connects, checks the ledger, takes the table's lock, checks drift",
    "read/COPY": "reads, casts and checks batches, quarantines bad rows, COPYs the rest",
    "commit": "finishes the COPY, swaps or inserts, records the run, commits",
}
_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2433;
       background: #f4f6f9; margin: 0; }
main { max-width: 940px; margin: 0 auto; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 0 0 10px; }
section { background: #fff; border: 1px solid #dde2ea; border-radius: 8px; padding: 16px 20px;
          margin: 16px 0; }
.status { display: inline-block; padding: 2px 10px; border-radius: 12px; color: #fff;
          font-weight: 600; }
.success { background: #2a9d8f; } .failed, .killed { background: #c1121f; }
.running { background: #e9a23b; } .skipped { background: #6c757d; }
dl { display: grid; grid-template-columns: max-content 1fr max-content 1fr; gap: 4px 16px;
     margin: 0; }
dt { color: #5c677d; } dd { margin: 0; font-variant-numeric: tabular-nums; word-break: break-all; }
pre.error { background: #fff1f0; border-left: 4px solid #c1121f; padding: 10px; margin: 12px 0 0;
            white-space: pre-wrap; }
table { border-collapse: collapse; width: 100%; }
#rejects table { table-layout: fixed; } #rejects td { overflow-wrap: anywhere; }
#rejects th:nth-child(1) { width: 90px; } #rejects th:nth-child(2) { width: 70px; }
#rejects th:nth-child(3) { width: 120px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #eef0f4;
         vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.chart { width: 100%; height: auto; font-size: 11px; fill: #5c677d; }
.chart .grid { stroke: #e8ebf0; } .chart .axis, .chart .tick { stroke: #8a93a5; }
.legend span { display: inline-block; margin-right: 14px; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
          vertical-align: -1px; margin-right: 4px; }
ul { margin: 4px 0; padding-left: 20px; } .muted { color: #5c677d; }
"""


@dataclass(frozen=True)
class RunPage:
    """Everything one report shows, read from the ledger and the quarantine table."""

    run: RunRow
    facts: RunFacts | None
    samples: list[Sample]
    rejects: list[RejectRule]


def load_page(url: str, schema: str, run_id: str | None) -> RunPage:
    """Read a run (None: the latest) and what was kept about it.

    Raises:
        RunNotFound: no run has that id, or the ledger has no run.
    """
    with connect(url, autocommit=True) as conn:
        ledger.mark_stale_runs(conn, schema)
        run = runlog.find_run(conn, schema, run_id)
        if run is None:
            raise RunNotFound(run_id, schema)
        facts = runlog.read_facts(conn, schema, run.run_id)
        samples = runlog.read_samples(conn, schema, run.run_id)
        rejects = runlog.rejects_by_rule(conn, facts.quarantine, run.run_id) if facts else []
    return RunPage(run, facts, samples, rejects)


def write_run_report(
    url: str, schema: str, run_id: str | None = None, out: Path | None = None
) -> Path:
    """Write a run's report (None: the latest run's) as one HTML file.

    Args:
        url: the database holding the ledger.
        schema: the ledger's (metadata) schema.
        run_id: a run id, or the start of one; None for the latest run.
        out: the file to write; default `.pipeline/reports/run-<id>.html`.

    Returns:
        The file written.

    Raises:
        RunNotFound: no run has that id, or the ledger has no run.
    """
    page = load_page(url, schema, run_id)
    path = out or state_dir() / "reports" / f"run-{page.run.run_id[:12]}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(page), encoding="utf-8")
    return path


def render(page: RunPage) -> str:
    """The page's HTML."""
    run = page.run
    title = f"Run {run.run_id[:12]} · {run.source or ''} → {run.target or ''}"
    body = [
        _facts(page),
        _charts(page),
        _phases(page.facts),
        _rejects(page),
        _drift_and_notes(page.facts),
    ]
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body><main>"
        f"<h1>{escape(title)}</h1>"
        f'<p class="muted">pgloadkit run report, written {generated}</p>'
        + "\n".join(body)
        + "</main></body></html>\n"
    )


def _num(value: float | None, unit: str = "", digits: int = 0) -> str:
    return NONE if value is None else f"{value:,.{digits}f}{unit}"


def _when(value: datetime | None) -> str:
    return NONE if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _facts(page: RunPage) -> str:
    run, facts = page.run, page.facts
    plan = facts.plan if facts else {}
    pairs = [
        ("status", f'<span class="status {escape(run.status)}">{escape(run.status)}</span>'),
        ("run id", escape(run.run_id)),
        ("source", escape(run.source or "")),
        ("table", escape(run.target or "")),
        ("file", escape(run.file or "")),
        ("strategy", escape(f"{run.strategy or ''} ({plan.get('reason', '')})")),
        ("started", _when(run.started_at)),
        ("finished", _when(run.finished_at)),
        ("rows read", _num(run.rows_read)),
        ("duration", _num(run.duration_s, " s", 2)),
        ("rows loaded", _num(run.rows_loaded)),
        ("peak memory", _num(run.peak_rss_mb, " MB")),
        ("rows rejected", _num(run.rows_rejected)),
        ("memory budget", format_size(facts.budget_bytes) if facts else NONE),
        ("batch rows", _num(plan.get("batch_rows"))),
        ("plan's estimate", format_size(facts.estimate_bytes) if facts else NONE),
    ]
    cells = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in pairs)
    error = f'<pre class="error">{escape(run.error)}</pre>' if run.error else ""
    return f'<section id="facts"><h2>Run</h2><dl>{cells}</dl>{error}</section>'


def _bands(facts: RunFacts | None) -> list[Band]:
    return [Band(p.name, p.start_s, p.end_s) for p in facts.phases] if facts else []


def _charts(page: RunPage) -> str:
    samples, facts = page.samples, page.facts
    if not samples:
        return (
            '<section id="charts"><h2>Over time</h2><p class="muted">No samples were kept for'
            " this run (it ran before reports existed, or its process was killed).</p></section>"
        )
    xs = [s.elapsed_s for s in samples]
    bands = _bands(facts)
    rate = line_chart(
        "rows per second",
        xs,
        [Line("rows_per_s", [s.rows_per_s for s in samples], "#1d6fb8")],
        bands=bands,
        unit="rows/s",
    )
    levels = []
    if facts:
        levels = [
            Level("budget", facts.budget_bytes / 1e6, BUDGET_COLOUR),
            Level("estimate", facts.estimate_bytes / 1e6, ESTIMATE_COLOUR),
        ]
    memory = line_chart(
        "memory (RSS)",
        xs,
        [Line("rss_mb", [s.rss_bytes / 1e6 for s in samples], "#e76f51")],
        levels=levels,
        bands=bands,
        unit="MB",
    )
    legend = "".join(
        f'<span><i class="swatch" style="background:{phase_colour(b.label)}"></i>'
        f"{escape(b.label)}</span>"
        for b in bands
    )
    return (
        f'<section id="charts"><h2>Rows per second</h2>{rate}'
        f'<p class="legend">{legend}</p>'
        f"<h2>Memory (RSS) against the budget and the plan's estimate</h2>{memory}"
        f'<p class="muted">{len(samples):,} samples, about one a second; shaded: the phases.</p>'
        "</section>"
    )


def _phases(facts: RunFacts | None) -> str:
    if not facts or not facts.phases:
        return '<section id="phases"><h2>Phases</h2><p class="muted">Not recorded.</p></section>'
    bands = _bands(facts)
    rows = "".join(
        f"<tr><td>{escape(p.name)}</td><td class='muted'>{escape(PHASES.get(p.name, ''))}</td>"
        f"<td class='n'>{p.start_s:,.2f} s</td><td class='n'>{p.seconds:,.2f} s</td></tr>"
        for p in facts.phases
    )
    return (
        f'<section id="phases"><h2>Phases</h2>{phase_bars(bands, max(b.end for b in bands))}'
        "<table><tr><th>phase</th><th>what it does</th><th class='n'>started at</th>"
        "<th class='n'>took</th></tr>"
        f"{rows}</table></section>"
    )


def _rejects(page: RunPage) -> str:
    if not page.rejects:
        return '<section id="rejects"><h2>Rejected rows</h2><p>No rows rejected.</p></section>'
    rows = "".join(
        f"<tr><td>{escape(r.rule)}</td><td class='n'>{r.rows:,}</td>"
        f"<td>{escape(', '.join(r.columns))}</td><td><ul>"
        + "".join(f"<li>{escape(e)}</li>" for e in r.examples)
        + "</ul></td></tr>"
        for r in page.rejects
    )
    where = Target(*page.facts.quarantine, "append").display if page.facts else "quarantine"
    return (
        '<section id="rejects"><h2>Rejected rows by rule</h2>'
        "<table><tr><th>rule</th><th class='n'>rows</th><th>columns</th><th>first rows</th></tr>"
        f"{rows}</table>"
        f'<p class="muted">Every rejected row is kept in <code>{escape(where)}</code>, with'
        f" <code>run_id = '{escape(page.run.run_id)}'</code>.</p></section>"
    )


def _drift_and_notes(facts: RunFacts | None) -> str:
    drift = facts.drift if facts else []
    notes = [n for n in (facts.notes if facts else []) if n not in drift]
    found = "<p>No drift from the schema loaded before.</p>"
    if drift:
        found = "<ul>" + "".join(f"<li>{escape(d)}</li>" for d in drift) + "</ul>"
    elif facts is None:
        found = '<p class="muted">Not recorded for this run.</p>'
    said = "".join(f"<li>{escape(n)}</li>" for n in notes)
    return f'<section id="drift"><h2>Schema drift</h2>{found}</section>' + (
        f'<section id="notes"><h2>Notes</h2><ul>{said}</ul></section>' if notes else ""
    )
