"""Read-only questions about the database: recent runs, and drift a file would bring."""

from __future__ import annotations

from rich.table import Table

from ingest import cast, drift, ledger, schema_history
from ingest.config import PipelineConfig
from ingest.db import connect, resolve_url
from ingest.run import explain


def recent_runs_table(url: str, metadata_schema: str, limit: int = 20) -> Table:
    """The ledger's most recent runs as a table; runs whose process died show as killed."""
    with connect(url, autocommit=True) as conn:
        ledger.mark_stale_runs(conn, metadata_schema)
        return ledger.runs_table(ledger.recent_runs(conn, metadata_schema, limit))


def drift_changes(config: PipelineConfig, source_name: str | None = None) -> list[str]:
    """How the source's file differs from the schema last loaded, one line per change."""
    explained = explain(config, source_name)
    source, profile = explained.source, explained.profile
    casts = cast.plan_casts(
        config.path, profile.schema, source.schema_config, profile.sample, fmt=profile.format
    )
    not_null = {c for c, k in source.validation_data.checks.items() if not k.nullable}
    columns = drift.columns_from_polars(casts.output_schema(profile.schema), not_null=not_null)
    db = config.database
    with connect(resolve_url(db.url), autocommit=True) as conn:
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
