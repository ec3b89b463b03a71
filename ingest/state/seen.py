"""The files of a glob already in their table, told apart before any of them is opened.

A nightly glob over a bucket lists every object, old and new. Each file's own run would also
skip an old one, but only after profiling it: the HEAD, the footer and a sample, several
requests per object. The ledger's fingerprints (for a remote object, its ETag and size from the
listing's HEAD) answer the question for the whole glob in one query.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql
from rich.console import Console

from ingest.config import PipelineConfig, SourceConfig
from ingest.pg.db import Conn, connect, resolve_url
from ingest.pg.target import Target, table_exists
from ingest.runtime.report import RunReport
from ingest.stages.remote import Location
from ingest.state import ledger


def loaded_before(
    config: PipelineConfig, source: SourceConfig, files: Sequence[Location], console: Console | None
) -> dict[Location, str]:
    """The glob's files the ledger already has in the source's table, each logged as skipped."""
    console = console or Console(stderr=True, soft_wrap=True)

    def log(message: str) -> None:
        console.print(message, markup=False, highlight=False)

    target = Target(config.database.schema_, source.table_name, "append")
    with connect(resolve_url(config.database.url, log), autocommit=True) as conn:
        known = already_loaded(conn, config.database.metadata_schema, target, files)
    for path, run in known.items():
        log(f"{path.name} is already in {target.display} (run {run}); nothing to do")
    return known


def already_loaded(
    conn: Conn, meta: str, target: Target, files: Sequence[Location]
) -> dict[Location, str]:
    """Each file whose content the ledger has in `target`, with the run that loaded it.

    Nothing is known (an empty answer) while the table or the ledger does not exist: the run
    of each file then decides for itself, as a single file's does.
    """
    if not files or not table_exists(conn, target):
        return {}
    if conn.execute("select to_regclass(format('%%I.files', %s::text))", (meta,)).fetchone() in (
        None,
        (None,),
    ):
        return {}
    prints = {path: ledger.describe_file(path).fingerprint for path in files}
    try:
        rows = conn.execute(
            sql.SQL(
                "select fingerprint, run_id from {}.files where target = %s"
                " and fingerprint = any(%s) order by loaded_at"
            ).format(sql.Identifier(meta)),
            (target.display, list(set(prints.values()))),
        ).fetchall()
    except psycopg.Error:
        return {}  # a ledger from another version: let each file's run decide
    runs = {str(fp): str(run) for fp, run in rows}  # ordered by time: the latest run wins
    return {path: runs[fp] for path, fp in prints.items() if fp in runs}


def skipped_report(source: str, path: Location, table: str, run_id: str) -> RunReport:
    """The report of a file the ledger says is in `table`: nothing read, nothing loaded."""
    return RunReport(
        run_id="",
        source=source,
        file=str(path),
        format="",
        table=table,
        strategy="skipped",
        status="skipped",
        total_rows=0,
        rows_loaded=0,
        rows_rejected=0,
        execution_time=0.0,
        memory_used_mb=0.0,
        estimate_mb=0.0,
        budget_mb=0.0,
        batch_rows=0,
        workers=0,
        notes=(f"{path.name} is already in {table} (run {run_id})",),
    )
