"""DuckDB's postgres extension, installed from the duckdb-extension-postgres wheel: no download."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # DuckDB loads only when used: ~27 MB of RSS a load does not need
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


def extension_dir(home: Path) -> Path:
    """Where DuckDB extensions live for this project's state folder."""
    return home / "duckdb_extensions"


def prepare_duckdb_extensions(directory: Path) -> Path:
    """Install DuckDB's postgres extension from its wheel into `directory`, offline; idempotent.

    Args:
        directory: The DuckDB `extension_directory` to fill.

    Returns:
        The directory, ready to pass as `extension_directory`.
    """
    import duckdb

    directory.mkdir(parents=True, exist_ok=True)
    config: dict[str, str | bool | int | float | list[str]] = {
        "extension_directory": str(directory),
        "autoinstall_known_extensions": False,
    }
    with duckdb.connect(":memory:", config=config) as con:
        install_postgres(con)
    return directory
