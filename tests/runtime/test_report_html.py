"""The run report: the ledger keeps a run's samples and facts, and the page plots exactly those."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import polars as pl
import psycopg
import pytest

from ingest import RunReport, load_config, run_source, write_run_report
from ingest.demo import employees
from ingest.errors import BadRowsOverLimit, RunNotFound
from ingest.state import runlog
from tests.configs import write_config
from tests.runtime.pngread import read_png

ROOT = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"
BAD_LINES = (7, 102, 2_002, 300_002)  # CSV lines (the header is line 1) whose Age is "forty"


def _csv(tmp_path: Path, rows: int) -> Path:
    frame = employees(rows, seed=3).with_columns(pl.col("Age").cast(pl.String))
    ages = frame["Age"].to_list()
    for line in BAD_LINES:
        if line - 2 < rows:
            ages[line - 2] = "forty"
    path = tmp_path / "people.csv"
    frame.with_columns(pl.Series("Age", ages)).write_csv(path)
    return path


def _config(tmp_path: Path, data: Path, schema: str, url: str, max_bad: int = 10) -> Path:
    """The report tests' config: ages typed as numbers, so "forty" is a bad row."""
    checks = (
        f"schema_config:\n  data_type: {{Age: int64}}\nvalidation_data: {{max_bad_rows: {max_bad}}}"
    )
    return write_config(
        tmp_path, data, schema, url, "report", table="people", if_exists="fail", extra=checks
    )


def _svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(m) for m in re.findall(r"<svg\b.*?</svg>", html, flags=re.S)]


def _plotted(html: str, series: str) -> tuple[list[tuple[float, float]], tuple[float, float]]:
    """A polyline's points turned back into values through its plot's scales, and how close
    they can be (points are written with two decimals: half a hundredth of a pixel)."""
    for svg in _svgs(html):
        for plot in svg.iter(f"{SVG}g"):
            for line in plot.iter(f"{SVG}polyline"):
                if line.get("data-series") != series:
                    continue
                x0, x1 = map(float, plot.attrib["data-x-domain"].split())
                px0, px1 = map(float, plot.attrib["data-x-range"].split())
                y0, y1 = map(float, plot.attrib["data-y-domain"].split())
                py0, py1 = map(float, plot.attrib["data-y-range"].split())
                points = [tuple(map(float, p.split(","))) for p in line.attrib["points"].split()]
                values = [
                    (
                        x0 + (px - px0) / (px1 - px0) * (x1 - x0),
                        y0 + (py - py0) / (py1 - py0) * (y1 - y0),
                    )
                    for px, py in points
                ]
                near = (0.0051 * (x1 - x0) / abs(px1 - px0), 0.0051 * (y1 - y0) / abs(py1 - py0))
                return values, near
    raise AssertionError(f"no polyline {series!r} in the page")


def test_the_plotted_series_are_the_ledgers_samples(
    tmp_path: Path, database_url: str, pg_schema: str
) -> None:
    """Rows/s and RSS are plotted point for point from the ledger's samples, taken ~1 s apart.

    Enough rows that the load lasts a few seconds even on an idle machine (600,000 took 0.9 s
    in CI, two samples).
    """
    data = _csv(tmp_path, 2_400_000)
    cfg = load_config(_config(tmp_path, data, pg_schema, database_url))
    report: RunReport = run_source(cfg, progress=False, memory_limit=200_000_000)
    assert report.rows_rejected == len(BAD_LINES)

    with psycopg.connect(database_url) as conn:
        samples = runlog.read_samples(conn, pg_schema, report.run_id)
        facts = runlog.read_facts(conn, pg_schema, report.run_id)
    assert len(samples) >= 3 and facts is not None
    gaps = np.diff([s.elapsed_s for s in samples])
    assert all(0.5 < gap < 2.5 for gap in gaps[:-1]), gaps  # the last one: when the run ended
    assert samples[0].rows == 0 and samples[-1].rows == report.rows_loaded
    assert [p.name for p in facts.phases] == [
        "profile",
        "plan",
        "prepare",
        "read/COPY",
        "commit",
    ]
    assert facts.budget_bytes == 200_000_000

    out = write_run_report(database_url, pg_schema, report.run_id[:8], tmp_path / "r.html")
    html = out.read_text()
    rate, (dx, dr) = _plotted(html, "rows_per_s")
    rss, (dx2, dm) = _plotted(html, "rss_mb")
    assert len(rate) == len(rss) == len(samples)
    for sample, (x, r), (x2, m) in zip(samples, rate, rss, strict=True):
        assert abs(x - sample.elapsed_s) <= dx and abs(x2 - sample.elapsed_s) <= dx2
        assert abs(r - sample.rows_per_s) <= dr, (r, sample)
        assert abs(m - sample.rss_bytes / 1e6) <= dm, (m, sample)
    levels = {el.get("data-level"): el for svg in _svgs(html) for el in svg.iter(f"{SVG}line")}
    assert {"budget", "estimate"} <= set(levels)
    assert "budget 200 MB" in html and f"rows rejected</dt><dd>{len(BAD_LINES)}<" in html
    assert "line 7, column &#x27;Age&#x27;: &#x27;forty&#x27; is not int64" in html
    assert "<script" not in html and not re.search(r"\b(src|href)=", html)
    assert re.findall(r"https?://[^\"' ]+", html) == ["http://www.w3.org/2000/svg"] * 3


def test_a_failed_run_keeps_its_samples_and_its_page_says_why(
    tmp_path: Path, database_url: str, pg_schema: str
) -> None:
    """A run that fails on too many bad rows keeps samples, phases and rejects by rule."""
    data = _csv(tmp_path, 5_000)
    cfg = load_config(_config(tmp_path, data, pg_schema, database_url, max_bad=1))
    with pytest.raises(BadRowsOverLimit):
        run_source(cfg, progress=False)
    html = write_run_report(database_url, pg_schema, None, tmp_path / "f.html").read_text()
    assert '<span class="status failed">failed</span>' in html
    assert "more than 1" in html or "max_bad_rows" in html  # the error, as the ledger has it
    assert re.search(r"<td>cast</td><td class='n'>3</td><td>Age</td>", html)
    assert len(_plotted(html, "rss_mb")[0]) >= 2
    with pytest.raises(RunNotFound, match=r"no run .* starting 'nope'"):
        write_run_report(database_url, pg_schema, "nope", tmp_path / "n.html")


def test_the_page_renders_in_headless_chromium(
    tmp_path: Path, database_url: str, pg_schema: str
) -> None:
    """Chromium draws the page: many colours, the rows/s line's blue and the budget's red."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the screenshot test: install Debian's chromium (.ci/run)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    data = _csv(tmp_path, 200_000)
    cfg = load_config(_config(tmp_path, data, pg_schema, database_url))
    run_source(cfg, progress=False, memory_limit=200_000_000)
    page = write_run_report(database_url, pg_schema, None, tmp_path / "page.html")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1000,1400",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    image = read_png(shot.read_bytes())[:, :, :3]
    assert image.shape[:2] == (1400, 1000)
    colours = {tuple(c) for c in np.unique(image.reshape(-1, 3), axis=0)}
    assert len(colours) > 200, len(colours)
    assert (29, 111, 184) in colours  # the rows/s line, #1d6fb8
    assert (193, 18, 31) in colours  # the budget line and the status badge, #c1121f


def test_invoke_report_latest_writes_the_page(
    tmp_path: Path, database_url: str, pg_schema: str
) -> None:
    """`invoke report --latest` prints the file it wrote, and refuses an id with --latest."""
    data = _csv(tmp_path, 2_000)
    cfg = _config(tmp_path, data, pg_schema, database_url)
    report = run_source(load_config(cfg), progress=False)
    out = tmp_path / "latest.html"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    invoke = [sys.executable, "-m", "invoke", "-r", str(ROOT), "report"]
    done = subprocess.run(
        [*invoke, "--latest", "--config", str(cfg), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out.resolve())
    assert report.run_id in out.read_text()
    both = subprocess.run(
        [*invoke, "--run-id", "abc", "--latest", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert both.returncode == 2 and "not both" in both.stderr


def test_a_run_is_found_by_the_start_of_its_id(database_url: str, pg_schema: str) -> None:
    """A unique prefix finds its run; a prefix two runs share, or none, finds nothing."""
    from ingest.state import ledger

    with psycopg.connect(database_url, autocommit=True) as conn:
        ledger.ensure_ledger(conn, pg_schema)
        for run_id in ("abc111", "abc222", "def333"):
            ledger.start_run(
                conn,
                pg_schema,
                run_id=run_id,
                config_hash="h",
                source="s",
                file="f",
                target="t",
                strategy="eager",
            )
        prefixes = ("abc1", "abc", "d", "x", "ab_1", "%1")  # _ and % are not wildcards
        found = [runlog.find_run(conn, pg_schema, p) for p in prefixes]
        latest = runlog.find_run(conn, pg_schema, None)
    assert [r.run_id if r else None for r in found] == ["abc111", None, "def333", None, None, None]
    assert latest is not None and latest.run_id == "def333"


def test_a_run_without_samples_still_gets_a_page(
    tmp_path: Path, database_url: str, pg_schema: str
) -> None:
    """A run from before reports (no samples, no facts) shows its facts and says what is missing."""
    from ingest.state import ledger

    with psycopg.connect(database_url, autocommit=True) as conn:
        ledger.ensure_ledger(conn, pg_schema)
        ledger.start_run(
            conn,
            pg_schema,
            run_id="old0001",
            config_hash="h",
            source="legacy",
            file="old.csv",
            target="raw.old",
            strategy="eager",
        )
    html = write_run_report(database_url, pg_schema, "old", tmp_path / "o.html").read_text()
    assert "No samples were kept" in html and "Not recorded" in html
    assert "<polyline" not in html and "old.csv" in html
