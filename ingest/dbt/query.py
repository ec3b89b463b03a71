"""Read-only SQL over the marts DuckDB file, optionally with PostgreSQL attached as `pg`.

Analysts: `from ingest.dbt.query import query`, then `query("select * from mart_hires_by_month")`.
Any number of readers may query at once; while `dbt build --target duckdb` writes the file,
DuckDB's file lock refuses readers, and `query` says so instead of waiting.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from ingest.dbt.runner import extension_dir, prepare_duckdb_extensions
from ingest.errors import QueryFailed, SourceFileError
from ingest.runtime.paths import state_dir


def default_marts_path() -> Path:
    """Where `build` writes the marts unless configured otherwise."""
    return state_dir() / "marts.duckdb"


def query(
    sql: str,
    duckdb_path: Path | None = None,
    *,
    attach_pg: str | None = None,
    extension_directory: Path | None = None,
) -> pl.DataFrame:
    """Run `sql` on a read-only connection to the marts file and return the result.

    Args:
        sql: One SQL statement; mart tables are in schema `main`, so bare names work.
        duckdb_path: The marts file; defaults to `state_dir()/marts.duckdb`.
        attach_pg: A PostgreSQL URL to attach read-only as `pg` (e.g. `pg.raw.employees`).
        extension_directory: Where the offline postgres extension lives; defaults to the one
            `ingest.dbt.runner` uses under `state_dir()`.

    Returns:
        The result as a polars DataFrame.

    Raises:
        SourceFileError: The marts file does not exist yet, or a dbt run is writing it.
        QueryFailed: DuckDB refused the statement (a missing table, a syntax error).
    """
    path = duckdb_path or default_marts_path()
    if not path.is_file():
        raise SourceFileError(path, "the marts database does not exist", fix="run `invoke build`")
    config: dict[str, str | bool | int | float | list[str]] = {
        "autoinstall_known_extensions": False
    }
    if attach_pg is not None:
        directory = prepare_duckdb_extensions(extension_directory or extension_dir(state_dir()))
        config["extension_directory"] = str(directory)
    try:
        connection = duckdb.connect(str(path), read_only=True, config=config)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        raise SourceFileError(
            path, "a dbt run is writing the marts database", fix="query again when it has finished"
        ) from None
    with connection as con:
        if attach_pg is not None:
            con.load_extension("postgres")
            # ATTACH takes no parameters; the URL goes in as a literal quoted by DuckDB itself.
            target = str(duckdb.ConstantExpression(attach_pg))
            con.execute(f"attach {target} as pg (type postgres, read_only)")
        try:
            relation = con.sql(sql)
            # A statement without a result (SET, CREATE ...) gives no relation: return no rows.
            return relation.pl() if relation is not None else pl.DataFrame()
        except duckdb.Error as exc:
            marts = con.execute(
                "select table_name from information_schema.tables"
                " where table_schema = 'main' order by table_name"
            ).fetchall()
            reason = str(exc).splitlines()[0]
            raise QueryFailed(path, reason, [str(name) for (name,) in marts]) from None
