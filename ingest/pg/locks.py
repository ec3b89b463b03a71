"""One run per table at a time: a session-level PostgreSQL advisory lock on the target's name.

The lock lives in the server session of the connection that took it, so a process that is killed
(even with SIGKILL) releases it when the server notices the connection is gone.

`PIPELINE_LOCK_TIMEOUT` (seconds) overrides how long a run waits for the lock by default (600).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, LiteralString

import psycopg

from ingest.errors import IngestError
from ingest.errors_server import TableBusy
from ingest.pg.db import Conn

LOCK_TIMEOUT_ENV = "PIPELINE_LOCK_TIMEOUT"
DEFAULT_WAIT_SECONDS = 600.0
LOG_EVERY_SECONDS = 30.0
_MAX_DELAY = 2.0

# Quoted names keep ("a.b", "c") and ("a", "b.c") apart; hashing on the server means every
# client derives the same key.
_KEY = "select hashtextextended(format('pgloadkit:%%I.%%I', %s::text, %s::text), 0)"
_HOLDER = (
    "select l.pid from pg_catalog.pg_locks l where l.locktype = 'advisory' and l.granted"
    " and l.database = (select oid from pg_catalog.pg_database where datname = current_database())"
    " and l.objsubid = 1 and l.classid = ((%(key)s >> 32) & 4294967295)::oid"
    " and l.objid = (%(key)s & 4294967295)::oid limit 1"
)


def default_wait_seconds() -> float:
    """Seconds to wait for a busy table: `PIPELINE_LOCK_TIMEOUT`, else 600.

    Raises:
        IngestError: the variable is set but is not a number.
    """
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_WAIT_SECONDS
    try:
        return max(float(raw), 0.0)
    except ValueError:
        raise IngestError(f"{LOCK_TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None


def _one(conn: Conn, query: LiteralString, params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


@contextmanager
def table_lock(
    conn: Conn,
    schema: str,
    table: str,
    *,
    wait_seconds: float | None = None,
    log: Callable[[str], None],
) -> Iterator[None]:
    """Hold the lock on `schema.table` for the block, waiting while another run holds it.

    Args:
        conn: an autocommit connection that stays open for the whole run.
        schema: the target's schema.
        table: the target table.
        wait_seconds: how long to wait; default `PIPELINE_LOCK_TIMEOUT` or 600 s.
        log: receives "waiting for ..." when the table is busy, then every ~30 s.

    Raises:
        TableBusy: the lock was still held by another session after `wait_seconds`.
        ValueError: the connection is not in autocommit mode.
    """
    if not conn.autocommit:
        raise ValueError(
            "table_lock needs an autocommit connection (it would idle in a transaction)"
        )
    wait = default_wait_seconds() if wait_seconds is None else wait_seconds
    name = f"{schema}.{table}"
    key = int(_one(conn, _KEY, (schema, table)))
    started = time.monotonic()
    delay, last_log = 0.05, float("-inf")
    while not _one(conn, "select pg_try_advisory_lock(%s)", (key,)):
        waited = time.monotonic() - started
        if waited >= wait:
            raise TableBusy(name, waited)
        if waited - last_log >= LOG_EVERY_SECONDS:
            holder = _one(conn, _HOLDER, {"key": key})
            who = f" (PostgreSQL backend {holder})" if holder is not None else ""
            log(f"waiting for another run loading {name}{who}, up to {wait:.0f} s …")
            last_log = waited
        time.sleep(min(delay, max(wait - waited, 0.0)))
        delay = min(delay * 2, _MAX_DELAY)
    try:
        yield
    finally:
        _release(conn, key, name, log)


def _release(conn: Conn, key: int, name: str, log: Callable[[str], None]) -> None:
    if conn.closed or conn.broken:
        return  # the server released the lock with the session
    try:
        released = _one(conn, "select pg_advisory_unlock(%s)", (key,))
    except psycopg.OperationalError:
        log(f"lost the connection holding the lock on {name}; the server released it")
        return
    if not released:
        log(f"the lock on {name} was no longer held when the run finished")
