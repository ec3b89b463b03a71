"""Secrets never leak into logs, errors, reports or the ledger; identifiers are always quoted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ingest.demo import employees

Conn = psycopg.Connection[tuple[object, ...]]
ROOT = Path(__file__).resolve().parent.parent
SECRET = "S3cret-Pa55word-zq"


def with_password(url: str) -> str:
    """The same server, with a password added (trust auth ignores it; it must still never leak)."""
    return make_conninfo(url, password=SECRET)


def ingest(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "ingest", "--config", str(config), "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_password_never_leaves_the_environment(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """With the password in DATABASE_URL, neither output, report nor ledger contains it."""
    data = tmp_path / "e.parquet"
    employees(2_000).write_parquet(data)
    config = tmp_path / "c.yml"
    config.write_text(
        f"path: {{input_path: '{data}'}}\n"
        f"database: {{table_name: t, if_table_exists: fail, schema: {pg_schema},"
        f" metadata_schema: {pg_schema}}}\n"
    )
    env = {**os.environ, "DATABASE_URL": with_password(database_url)}
    first = ingest(config, env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["rows_loaded"] == 2_000
    second = ingest(config, env)  # fails: the table exists
    assert second.returncode == 1 and "already exists" in second.stderr
    ledger = pg_conn.execute(
        sql.SQL("select runs::text from {} runs").format(sql.Identifier(pg_schema, "runs"))
    ).fetchall()
    assert len(ledger) == 2
    for text in (first.stdout, first.stderr, second.stdout, second.stderr, str(ledger)):
        assert SECRET not in text


def test_unreachable_server_error_names_host_not_password(tmp_path: Path) -> None:
    """A server that does not answer gives an error with host and port, never the password."""
    data = tmp_path / "e.parquet"
    employees(10).write_parquet(data)
    config = tmp_path / "c.yml"
    config.write_text(
        f"path: {{input_path: '{data}'}}\ndatabase: {{table_name: t, url: '${{TEST_DB_URL}}'}}\n"
    )
    env = {
        **os.environ,
        "TEST_DB_URL": f"postgresql://u:{SECRET}@127.0.0.1:1/db",
        "PGCONNECT_TIMEOUT": "2",
    }
    done = ingest(config, env)
    assert done.returncode == 1
    assert "127.0.0.1:1/db" in done.stderr
    assert SECRET not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("name", ["emp; drop table canary; --", 'q"uote', "Robert'); --"])
def test_hostile_table_names_are_quoted(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn, name: str
) -> None:
    """A table name that is SQL is created as that name; nothing else runs."""
    pg_conn.execute(sql.SQL("create table {} (a int)").format(sql.Identifier(pg_schema, "canary")))
    data = tmp_path / "e.parquet"
    employees(100).write_parquet(data)
    config = tmp_path / "c.yml"
    config.write_text(
        json.dumps(
            {
                "path": {"input_path": str(data)},
                "database": {
                    "table_name": name,
                    "schema": pg_schema,
                    "metadata_schema": pg_schema,
                    "url": database_url,
                },
            }
        )
    )
    done = ingest(config, {**os.environ})
    assert done.returncode == 0, done.stderr
    count = pg_conn.execute(
        sql.SQL("select count(*) from {}").format(sql.Identifier(pg_schema, name))
    ).fetchone()
    assert count == (100,)
    assert pg_conn.execute(
        sql.SQL("select count(*) from {}").format(sql.Identifier(pg_schema, "canary"))
    ).fetchone() == (0,)


def test_pg_variables_select_the_server(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """With no DATABASE_URL, the standard PG* variables choose the server."""
    parts = conninfo_to_dict(database_url)
    data = tmp_path / "e.parquet"
    employees(50).write_parquet(data)
    config = tmp_path / "c.yml"
    config.write_text(
        f"path: {{input_path: '{data}'}}\n"
        f"database: {{table_name: viapg, schema: {pg_schema}, metadata_schema: {pg_schema}}}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {
        "PGHOST": str(parts.get("host", "127.0.0.1")),
        "PGPORT": str(parts.get("port", 5432)),
        "PGUSER": str(parts.get("user", "postgres")),
        "PGDATABASE": str(parts["dbname"]),
    }
    done = ingest(config, env)
    assert done.returncode == 0, done.stderr
    assert pg_conn.execute(
        sql.SQL("select count(*) from {}").format(sql.Identifier(pg_schema, "viapg"))
    ).fetchone() == (50,)
