"""Which PostgreSQL to use, and connections to it that retry briefly and never leak the password."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

from ingest.errors import DatabaseUnavailable

CONNECT_RETRY_SECONDS = 15.0
CONNECT_RETRY_ENV = "PIPELINE_CONNECT_RETRY"
PG_VARIABLES = ("PGHOST", "PGHOSTADDR", "PGSERVICE")


def resolve_url(configured: SecretStr | None, log: Callable[[str], None] | None = None) -> str:
    """The database: `database.url`, `DATABASE_URL`, the `PG*` variables, else the embedded server.

    The embedded server is started when needed and left running.
    """
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value()
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    if any(os.environ.get(name) for name in PG_VARIABLES):
        return ""  # an empty conninfo: libpq reads PGHOST, PGUSER, PGPASSWORD... itself
    from ingest import embedded

    return embedded.start(log=log).url


def describe(url: str) -> str:
    """`host:port/dbname` of a URL, without user or password, for messages."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparsable database URL)"
    host = parts.get("host") or os.environ.get("PGHOST") or "localhost"
    port = parts.get("port") or os.environ.get("PGPORT") or 5432
    return f"{host}:{port}/{parts.get('dbname') or os.environ.get('PGDATABASE', '')}"


def connect(
    url: str, *, autocommit: bool = False, retry_seconds: float | None = None
) -> psycopg.Connection[tuple[object, ...]]:
    """Connect, retrying with backoff for a bounded time while the server is unreachable.

    The time defaults to 15 s, or `PIPELINE_CONNECT_RETRY` seconds.

    Raises:
        DatabaseUnavailable: naming host and port, never the password.
    """
    if retry_seconds is None:
        retry_seconds = float(os.environ.get(CONNECT_RETRY_ENV, CONNECT_RETRY_SECONDS))
    deadline = time.monotonic() + retry_seconds
    delay = 0.2
    while True:
        try:
            return psycopg.connect(
                url, autocommit=autocommit, connect_timeout=10, application_name="pgloadkit"
            )
        except psycopg.OperationalError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            if "password" in reason.lower() or "authentication" in reason.lower():
                raise DatabaseUnavailable(describe(url), "authentication failed") from None
            if time.monotonic() + delay > deadline:
                raise DatabaseUnavailable(describe(url), _scrub(reason, url)) from None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        except psycopg.ProgrammingError as exc:
            raise DatabaseUnavailable(
                "(database URL)", f"not a valid URL: {_scrub(str(exc), url)}"
            ) from None


def _scrub(text: str, url: str) -> str:
    """Remove the password from any text that might quote the URL."""
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        password = None
    return text.replace(str(password), "***") if password else text
