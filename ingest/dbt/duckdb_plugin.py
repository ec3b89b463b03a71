"""A dbt-duckdb plugin: the Postgres attach the marts read, with nothing downloaded.

The generated profile (`ingest.dbt.profile`) names this module under the duckdb target's
`plugins:`. dbt-duckdb calls `configure_connection` on the new database before its own `attach:`
list, so the plugin installs the postgres extension from the `duckdb-extension-postgres` wheel
(the profile's `extension_directory` is set when the database opens), keeps the credentials in a
temporary DuckDB secret, and attaches PostgreSQL read-only. Neither the password nor the URL
appears in a statement, so a failed attach cannot echo them into dbt's log.
"""

from __future__ import annotations

import os
from typing import Any

import duckdb
from dbt.adapters.duckdb.plugins import BasePlugin
from psycopg.conninfo import conninfo_to_dict

from ingest.dbt.extensions import install_postgres

SECRET = "pipeline_pg"
# libpq keyword -> DuckDB postgres secret key.
_SECRET_KEYS = {"host": "HOST", "port": "PORT", "dbname": "DATABASE", "user": "USER"}


def _literal(value: str) -> str:
    """A SQL string literal: DuckDB's CREATE SECRET takes no parameters."""
    return "'" + value.replace("'", "''") + "'"


def attach_postgres(con: duckdb.DuckDBPyConnection, database_url: str, alias: str) -> None:
    """Load the postgres extension and attach `database_url` read-only as `alias`.

    The password is the URL's, else `PGPASSWORD`'s, as libpq would pick it.
    """
    try:
        parsed = conninfo_to_dict(database_url)
    except Exception as exc:  # psycopg's ProgrammingError; never echo the URL (password)
        raise ValueError(f"DATABASE_URL is not a PostgreSQL URL ({type(exc).__name__})") from None
    params = {k: str(v) for k, v in parsed.items() if v is not None}
    password = params.get("password") or os.environ.get("PGPASSWORD", "")
    parts = [
        f"{key} {_literal(params[name])}" for name, key in _SECRET_KEYS.items() if name in params
    ]
    if password:
        parts.append(f"PASSWORD {_literal(password)}")
    install_postgres(con)
    con.execute("load postgres")
    con.execute(f"create or replace temporary secret {SECRET} (type postgres, {', '.join(parts)})")
    quoted = '"' + alias.replace('"', '""') + '"'
    con.execute(f"attach if not exists '' as {quoted} (type postgres, secret {SECRET}, read_only)")


class Plugin(BasePlugin):
    """Attach PostgreSQL for the marts; config: `database_url` and `alias`."""

    def initialize(self, plugin_config: dict[str, Any]) -> None:
        """Keep the URL and alias the profile gives."""
        self.database_url = str(plugin_config["database_url"])
        self.alias = str(plugin_config.get("alias", "pg"))

    def configure_connection(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Install, load and attach before dbt-duckdb runs anything on the database."""
        attach_postgres(conn, self.database_url, self.alias)
