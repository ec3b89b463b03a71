"""DuckDB's postgres extension, installed from the duckdb-extension-postgres wheel: no download."""

from __future__ import annotations

import duckdb


def install_postgres(con: duckdb.DuckDBPyConnection) -> None:
    """Install DuckDB's postgres extension from its wheel into `con`'s extension folder; offline.

    Idempotent: an extension already installed there (any earlier run) is kept.
    """
    import duckdb_extensions

    row = con.execute(
        "select installed from duckdb_extensions() where extension_name = 'postgres_scanner'"
    ).fetchone()
    if not (row and row[0]):
        duckdb_extensions.import_extension("postgres", con=con)
