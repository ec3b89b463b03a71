"""Commit a load, and when the connection drops as COMMIT is sent, find out what happened.

psycopg then raises, yet the server may have committed before the connection went: the
outcome is unknown to the client. Once the old backend has exited, its transaction has
committed or rolled back for good, and a ledger row written in that transaction tells which.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg

from ingest.errors import IngestError
from ingest.errors_server import CommitUnknown, ServerGone
from ingest.pg.db import Conn, describe, ensure_live, server_fault

# How long the old backend may take to exit, before and after we end it ourselves.
SETTLE_SECONDS = 5.0


def commit(
    conn: Conn,
    ask: Conn,
    url: str,
    table: str,
    committed: Callable[[Conn], bool] | None,
    went_through: Callable[[str], None],
    marker: str = "this run in the ledger",
) -> None:
    """Commit `conn`'s transaction; if the connection drops at COMMIT, ask the server after.

    Args:
        conn: the connection whose transaction loads `table`.
        ask: an autocommit connection to ask over if `conn` drops (a new one if it dropped too).
        url: the database, to ask over a new connection.
        table: the target's display name, for messages.
        committed: whether the transaction's ledger row is in the database.
        went_through: told "the commit went through" (with why we had to ask) when it did.
        marker: what `committed` looks for, for a user to look for when we could not.

    Raises:
        ServerGone: the commit did not happen; the table is unchanged.
        CommitUnknown: the server could not be asked, or the old backend would not end.
        psycopg.Error: the server refused the commit (the connection is fine, nothing changed).
    """
    pid = conn.info.backend_pid
    try:
        conn.commit()
    except psycopg.Error as exc:
        if not conn.broken:
            raise
        where = describe(url)
        gone = server_fault(exc, url)
        reason = gone.reason if gone is not None else str(exc).splitlines()[0]
        if _went_through(ask, url, pid, committed, exc, (table, marker)):
            went_through(
                f"the connection to {where} dropped as the commit was sent ({reason}); "
                "the commit went through"
            )
            return
        raise ServerGone(
            where,
            reason,
            moment="as the commit was sent",
            outcome=f"the commit did not happen; {table} is unchanged",
        ) from exc


def _went_through(
    ask: Conn,
    url: str,
    pid: int,
    committed: Callable[[Conn], bool] | None,
    exc: psycopg.Error,
    names: tuple[str, str],
) -> bool:
    """Whether the transaction of backend `pid` committed, asked over `ask` or a new connection."""
    try:
        conn = ensure_live(ask, url, retry_seconds=SETTLE_SECONDS)
        try:
            if not backend_ended(conn, pid):
                raise IngestError(f"its backend (pid {pid}) is still running")
            if committed is None:
                raise IngestError("this load writes no ledger row to look for")
            return committed(conn)
        finally:
            if conn is not ask:
                conn.close()
    except (psycopg.Error, IngestError) as error:
        gone = server_fault(exc, url)
        reason = gone.reason if gone is not None else str(exc).splitlines()[0]
        check = str(error).splitlines()[0]
        raise CommitUnknown(describe(url), names[0], reason, check, names[1]) from exc


def backend_ended(conn: Conn, pid: int) -> bool:
    """Wait for backend `pid` to exit, ending it if it lingers; whether it is gone."""
    for attempt in range(2):
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            alive = conn.execute(
                "select 1 from pg_catalog.pg_stat_activity where pid = %s", (pid,)
            ).fetchone()
            if alive is None:
                return True
            time.sleep(0.05)
        if attempt == 0:
            conn.execute("select pg_catalog.pg_terminate_backend(%s)", (pid,))
    return False
