"""After a successful load: refresh the table's dbt source and staging contract."""

from __future__ import annotations

from dataclasses import replace

import psycopg

from ingest.errors import IngestError
from ingest.executors.local import Counts, Log
from ingest.executors.task import Job
from ingest.pg.db import Conn, ensure_live
from ingest.runtime.secrets import scrub
from ingest.stages import keys
from ingest.state import schema_history


def refresh_sources(job: Job, control: Conn, url: str, counts: Counts, log: Log) -> None:
    """Write the loaded table's dbt source and staging contract; the load stands if this fails."""
    from ingest.dbt import sources as dbtgen  # dbt's side loads only when a load succeeded
    from ingest.dbt.profile import write_profile
    from ingest.dbt.project import staging_project
    from ingest.runtime.paths import state_dir

    db, source = job.config.database, job.source
    project = staging_project(job.config)
    if project is None:
        log(
            f"dbt sources not written: {job.config.path.name} is not the project's config "
            "(set dbt_project: in it to write them into a dbt project)"
        )
        return
    try:
        conn = ensure_live(control, url)
        try:
            columns = schema_history.table_columns(
                conn, job.target.schema, job.target.table, exclude=job.lineage
            )
        finally:
            if conn is not control:
                conn.close()
    except (psycopg.Error, IngestError) as exc:
        note = f"dbt sources not refreshed: {scrub(str(exc).splitlines()[0], [url])}"
        log(note)
        counts.notes.append(note)
        return
    if columns is None:
        return
    not_null = {c for c, k in source.validation_data.checks.items() if not k.nullable}
    columns = [replace(c, nullable=c.name not in not_null) for c in columns]
    try:
        path = dbtgen.write_sources(
            project,
            source.name,
            job.target.schema,
            {job.target.table: columns},
            {job.target.table: source.validation_data.checks},
            loaded_at=db.loaded_at_column,
            run_id=db.run_id_column,
            column_naming=source.schema_config.column_naming or "lower",
            primary_key=keys.dbt_key(job.target.table, job.merge),
        )
        write_profile(project, url, state_dir())
    except (OSError, ValueError, IngestError) as exc:
        note = f"dbt sources not refreshed: {exc}"
        log(note)
        counts.notes.append(note)
        return
    log(f"refreshed dbt sources: {path}")
