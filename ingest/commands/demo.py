"""The demo: generated data loaded, dbt built on PostgreSQL and DuckDB, a mart printed."""

from __future__ import annotations

import time

import ingest
from ingest.commands.load import print_frame, timed
from ingest.commands.session import EXIT_OK, Session
from ingest.runtime.paths import state_dir

MART_QUERY = (
    "select department, hire_year, headcount, avg_salary "
    "from mart_department_salary order by hire_year desc, department "
    "limit 8"
)


def demo(s: Session, rows: int = 1_000_000) -> int:
    """Generate demo data, load it (embedded PostgreSQL if none configured), build marts, query."""
    from ingest.dbt import runner as dbt
    from ingest.dbt.query import query as run_query

    started = time.monotonic()
    files = ingest.write_demo(state_dir() / "data", rows)
    timed(s, f"wrote {rows:,} demo rows (Parquet and CSV) under {state_dir() / 'data'}", started)
    config = s.load_config()
    started = time.monotonic()
    url = ingest.resolve_url(config.database.url, s.note)
    timed(s, "database ready", started)
    s.note(f"  using PostgreSQL at {ingest.describe(url)}")
    started = time.monotonic()
    report = ingest.run_source(config, console=s.err, progress=s.progress)
    timed(s, f"ingested {files.parquet.name}", started)
    s.note(report.summary())
    multi = ingest.load_config(s.root / "examples" / "multi.yml")
    started = time.monotonic()
    report = ingest.run_source(multi, "employees_csv", console=s.err, progress=s.progress)
    timed(s, f"ingested {files.csv.name}", started)
    s.note(report.summary())
    started = time.monotonic()
    settings = dbt.settings_from_config(config, url, memory_limit=s.memory_limit(None))
    steps = dbt.build(settings, log=s.detail)
    timed(s, "dbt build (PostgreSQL staging, DuckDB marts)", started)
    for step in steps:
        s.note(f"  dbt {step.command} --target {step.target}: {step.seconds:.1f} s")
    print_frame(s, run_query(MART_QUERY))
    s.note('Try: pgloadkit query "select * from mart_hires_by_month limit 12"')
    return EXIT_OK
