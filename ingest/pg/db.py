"""Which PostgreSQL to use, and connections to it that retry briefly and never leak the password."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

from ingest.errors_server import DatabaseUnavailable, ServerFault, ServerGone
from ingest.runtime.secrets import scrub, url_password

CONNECT_RETRY_SECONDS = 15.0
CONNECT_RETRY_ENV = "PIPELINE_CONNECT_RETRY"
# libpq's connect_timeout per attempt: the first is short (2 s is libpq's least), so a host that
# drops packets is named within seconds rather than after a silent 10 s; later attempts wait more.
FIRST_CONNECT_TIMEOUT = 2
CONNECT_TIMEOUT = 10
PG_VARIABLES = ("PGHOST", "PGHOSTADDR", "PGSERVICE")
# How long the ledger waits for a server that dropped the run's connection to take a new one.
RECONNECT_SECONDS = 5.0
Conn = psycopg.Connection[tuple[object, ...]]
# Server conditions of SQLSTATE class 53 (insufficient resources): what to say and what to do.
RESOURCES: dict[str, tuple[str, str]] = {
    "53100": ("is out of disk space", "free space on the server's data volume, then run again"),
    "53200": (
        "is out of memory",
        "give the server more memory or lower its work_mem / maintenance_work_mem, then run again",
    ),
    "53300": (
        "has too many connections",
        "close idle sessions or raise max_connections, or lower database.workers, then run again",
    ),
}
_RESOURCE_FIX = "give the server more of what it lacks (see its log), then run again"
# Admin shutdown, crash shutdown, cannot connect now: the server stopped or is starting.
_GONE_STATES = ("57P01", "57P02", "57P03")
FIX_SERVER = (
    "start the server (or wait for it), check DATABASE_URL (or database.url), "
    "or unset it to use the embedded server"
)
FIX_LOGIN = "check the user and password in DATABASE_URL (or database.url)"
FIX_DATABASE = "create the database, or name an existing one in DATABASE_URL (or database.url)"
FIX_URL = "write it as postgresql://user:password@host:port/dbname"
_log = logging.getLogger(__name__)


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
    from ingest.pg import embedded

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

    The time defaults to 15 s, or `PIPELINE_CONNECT_RETRY` seconds. The first failed attempt
    logs (logger `ingest.pg.db`, warning) that it is retrying, so the wait is never silent. A
    server that answers and refuses (no such database or role, a bad password) fails at once.

    Raises:
        DatabaseUnavailable: naming host and port, the reason and the fix; never the password.
    """
    if retry_seconds is None:
        retry_seconds = float(os.environ.get(CONNECT_RETRY_ENV, CONNECT_RETRY_SECONDS))
    deadline = time.monotonic() + retry_seconds
    delay = 0.2
    where = describe(url)
    timeout = FIRST_CONNECT_TIMEOUT
    while True:
        try:
            return psycopg.connect(
                url, autocommit=autocommit, connect_timeout=timeout, application_name="pgloadkit"
            )
        except psycopg.OperationalError as exc:
            reason, fix, final = connect_failure(str(exc))
            reason = _scrub(reason, url)
            if final or time.monotonic() + delay > deadline:
                raise DatabaseUnavailable(where, reason, fix) from None
            if delay == 0.2:
                _log.warning(
                    "connecting to PostgreSQL at %s: %s; retrying for %.0f s",
                    where, reason, retry_seconds,
                )  # fmt: skip
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            timeout = int(
                min(CONNECT_TIMEOUT, max(FIRST_CONNECT_TIMEOUT, deadline - time.monotonic()))
            )
        except psycopg.ProgrammingError as exc:
            raise DatabaseUnavailable(
                "(database URL)", f"not a valid URL: {_scrub(str(exc), url)}", FIX_URL
            ) from None


def connect_failure(message: str) -> tuple[str, str, bool]:
    """libpq's failure text as (reason, fix, final): one clause, what to do, and whether the
    server answered (retrying cannot help then)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    first = lines[0] if lines else "no reason given"
    # 'connection failed: connection to server at "h", port 5 failed: FATAL:  role "x" ...'
    reason = first.rsplit(" failed: ", 1)[-1]
    final = reason.startswith("FATAL:")
    reason = " ".join(reason.removeprefix("FATAL:").split())
    lowered = reason.lower()
    if "password" in lowered or "authentication" in lowered:
        return reason, FIX_LOGIN, True
    if "role" in lowered and "does not exist" in lowered:
        return reason, FIX_LOGIN, True
    if "database" in lowered and "does not exist" in lowered:
        return reason, FIX_DATABASE, True
    return reason, FIX_SERVER, final


def _scrub(text: str, url: str) -> str:
    """Remove the password from any text that might quote the URL."""
    return scrub(text, [url_password(url)])


def is_server_condition(exc: BaseException) -> bool:
    """Whether a server error is about the server itself (classes 08, 53, 57P0x), not a value."""
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate or ""
    return state[:2] in ("08", "53") or state in _GONE_STATES


def server_fault(
    exc: BaseException, url: str, outcome: str = "nothing was changed"
) -> ServerFault | None:
    """`exc` as a ServerFault when the server, not the data, stopped the run; else None.

    A lost connection (no SQLSTATE, class 08, or 57P01-57P03) is `ServerGone`; class 53 names
    the resource the server ran out of and what to free. The reason never carries the password.
    """
    if not isinstance(exc, psycopg.Error):
        return None
    state = exc.sqlstate or ""
    reason = _scrub(_reason(exc), url)
    where = describe(url)
    lost = isinstance(exc, psycopg.OperationalError) and not state
    if lost or state[:2] == "08" or state in _GONE_STATES:
        return ServerGone(where, reason, outcome=outcome)
    if state[:2] == "53":
        condition, fix = RESOURCES.get(state, (f"ran out of a resource ({state})", _RESOURCE_FIX))
        return ServerFault(where, condition, reason, outcome, fix)
    return None


def _reason(exc: psycopg.Error) -> str:
    """The server's one-line message, or the driver's first line when the server sent none."""
    primary = exc.diag.message_primary if exc.sqlstate else None
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return primary or (lines[0] if lines else type(exc).__name__)


def ensure_live(conn: Conn, url: str, *, retry_seconds: float = RECONNECT_SECONDS) -> Conn:
    """`conn` if it still answers, else a new autocommit connection (which the caller closes).

    Raises:
        DatabaseUnavailable: `conn` was lost and no new connection came within `retry_seconds`.
    """
    if not (conn.closed or conn.broken):
        try:
            conn.execute("select 1")
            return conn
        except psycopg.OperationalError:
            if not conn.broken:
                raise
    return connect(url, autocommit=True, retry_seconds=retry_seconds)
