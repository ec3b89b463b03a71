"""Questions about the database: recent runs, and drift a file would bring.

Listing runs first marks those whose process died as killed: the one write here.
"""

from __future__ import annotations

from rich.table import Table

from ingest.config import PipelineConfig, SourceConfig
from ingest.errors import SourceFileError
from ingest.pg.db import Conn, connect, resolve_url
from ingest.run import explain
from ingest.stages import cast
from ingest.stages.remote import Location
from ingest.state import drift, ledger, schema_history


def recent_runs_table(url: str, metadata_schema: str, limit: int = 20) -> Table:
    """The ledger's most recent runs as a table; runs whose process died show as killed."""
    with connect(url, autocommit=True) as conn:
        ledger.mark_stale_runs(conn, metadata_schema)
        return ledger.runs_table(ledger.recent_runs(conn, metadata_schema, limit))


def drift_changes(
    config: PipelineConfig, source_name: str | None = None
) -> dict[Location, list[str]]:
    """How each of the source's files (every match of a glob) differs from the schema last
    loaded, one line per change; a file without drift has no lines.

    Raises:
        SourceFileError: no file matches the source's path.
    """
    source = config.source(source_name)
    files = config.input_files(source)
    if not files:
        raise SourceFileError(
            source.input_path, "no file matches", "check input_path in the config"
        )
    db = config.database
    with connect(resolve_url(db.url), autocommit=True) as conn:
        return {path: _file_drift(config, source, path, conn) for path in files}


def _file_drift(
    config: PipelineConfig, source: SourceConfig, path: Location, conn: Conn
) -> list[str]:
    profile = explain(config, source.name, path=path).profile
    casts = cast.plan_casts(
        config.path, profile.schema, source.schema_config, profile.sample, fmt=profile.format
    )
    not_null = {c for c, k in source.validation_data.checks.items() if not k.nullable}
    columns = drift.columns_from_polars(casts.output_schema(profile.schema), not_null=not_null)
    db = config.database
    found = schema_history.check(
        conn,
        db.metadata_schema,
        source.name,
        db.schema_,
        source.table_name,
        columns,
        exclude=(db.loaded_at_column, db.run_id_column),
    )
    return found.changes()
