"""What a run's commit does in its transaction: evolve the table, record schema and files.

Deciding it reads the table's schema history and drift (`ingest.state`), and may find the run
has nothing to do (the file is in the table already).
"""

from __future__ import annotations

from ingest import keyed
from ingest.errors import SchemaMismatch
from ingest.executors import local, runrecord
from ingest.executors.local import Counts, Session
from ingest.executors.task import Job
from ingest.pg.db import Conn
from ingest.pg.target import table_exists
from ingest.stages import keys
from ingest.state import drift, ledger, schema_history


def commit_hooks(
    job: Job, env: Session, counts: Counts, files: list[ledger.FileFacts]
) -> local.Hooks | None:
    """What the commit runs in its transaction (drift, ledger); None when there is nothing to do.

    Raises:
        SchemaDrift, SchemaMismatch: the file's columns do not fit the table.
    """
    control, log = env.control, env.log
    into = job.target.if_exists in ("append", "merge")  # rows go into the table as it is
    appending = into and table_exists(control, job.target)
    if appending and not env.force and len(files) == 1:
        previous = ledger.loaded_file(control, job.meta, job.target.display, files[0].fingerprint)
        if previous:
            note = f"{files[0].path.name} is already in {job.target.display} (run {previous})"
            log(f"{note}; nothing to do (use --force to load it again)")
            counts.notes.append(note)
            runrecord.finish(job, env, counts, "skipped", note)
            return None
    not_null = {c for c, k in job.source.validation_data.checks.items() if not k.nullable}
    columns = drift.columns_from_polars(job.output, not_null=not_null)
    found = schema_history.check(
        control,
        job.meta,
        job.source.name,
        job.target.schema,
        job.target.table,
        columns,
        exclude=keys.own_columns(job.lineage, job.merge),
    )
    statements = drift.decide(
        job.source.on_drift,
        job.source.name,
        job.target.table,
        found,
        log,
        schema=job.target.schema,
        path=job.profile.path,
    )
    counts.drift = found.changes()
    counts.notes.extend(counts.drift)
    if appending and not statements:  # warn, or a history that differs from the table
        _refuse_new_columns(control, job, [c.name for c in columns])

    def evolve(conn: Conn) -> None:
        # Before the staged rows are inserted: they may fill a column this adds.
        schema_history.evolve(conn, job.source.name, job.target.display, statements)

    def on_commit(conn: Conn) -> None:
        schema_history.record_schema(
            conn, job.meta, job.source.name, job.target.display, columns, job.run_id
        )
        for number, facts in enumerate(files):
            ledger.record_file(
                conn,
                job.meta,
                path=str(facts.path),
                size=facts.size,
                mtime=facts.mtime,
                fingerprint=facts.fingerprint,
                target=job.target.display,
                run_id=job.run_id,
                replace=not appending and number == 0,
            )
        keyed.record_cursor(conn, job, counts.skipped, counts.cursor_top)

    def committed(conn: Conn) -> bool:
        return ledger.committed(conn, job.meta, job.run_id)

    return local.Hooks(on_commit, evolve if appending and statements else None, committed)


def _refuse_new_columns(control: Conn, job: Job, names: list[str]) -> None:
    """Refuse an append of columns the table lacks: the INSERT would fail on the first one."""
    target = job.target
    own = keys.own_columns(job.lineage, job.merge)
    live = schema_history.table_columns(control, target.schema, target.table, exclude=own)
    have = {c.name for c in live or ()}
    extra = [name for name in names if name not in have]
    if live is not None and extra:
        raise SchemaMismatch(target.display, job.profile.path, extra)
