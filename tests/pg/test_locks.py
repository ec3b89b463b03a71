"""The per-table advisory lock: waiting, giving up, releasing, and dying with its process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ingest.errors import IngestError
from ingest.errors_server import TableBusy
from ingest.pg import locks
from ingest.pg.locks import table_lock

Conn = psycopg.Connection[Any]
ROOT = Path(__file__).resolve().parents[2]

# Takes the lock, says so, holds it `hold` s, releases it, then stays connected `after` s.
HOLDER = """
import sys, time, psycopg
from ingest.pg.locks import table_lock
url, schema, table, hold, after = sys.argv[1:]
with psycopg.connect(url, autocommit=True) as conn:
    with table_lock(conn, schema, table, log=print):
        print("locked", flush=True)
        time.sleep(float(hold))
    print("released", flush=True)
    time.sleep(float(after))
"""


def holder(
    url: str, schema: str, table: str, hold: float, after: float = 0
) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, schema, table, str(hold), str(after)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    return child


def stop(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGKILL)
    child.wait()


def advisory_locks(conn: Conn) -> int:
    row = conn.execute(
        "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()"
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_second_process_waits_then_gets_the_lock(
    database_url: str, pg_conn: Conn, pg_schema: str
) -> None:
    """The second run logs that it waits, and gets the lock once the first releases it."""
    child = holder(database_url, pg_schema, "trips", hold=2, after=10)
    messages: list[str] = []
    try:
        started = time.monotonic()
        with table_lock(pg_conn, pg_schema, "trips", wait_seconds=30, log=messages.append):
            waited = time.monotonic() - started
            assert child.poll() is None  # released by the first run, not by its exit
            assert advisory_locks(pg_conn) == 1
        assert advisory_locks(pg_conn) == 0
    finally:
        stop(child)
    assert 1.0 <= waited < 10
    assert len(messages) == 1
    assert messages[0].startswith(f"waiting for another run loading {pg_schema}.trips")
    assert "PostgreSQL backend" in messages[0]


def test_gives_up_with_table_busy(
    database_url: str, pg_conn: Conn, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With wait_seconds=1 a busy table raises TableBusy naming the table, after ~1 s, having
    repeated the waiting message at the logging interval."""
    monkeypatch.setattr(locks, "LOG_EVERY_SECONDS", 0.4)
    messages: list[str] = []
    child = holder(database_url, pg_schema, "trips", hold=30)
    try:
        started = time.monotonic()
        with (
            pytest.raises(TableBusy) as caught,
            table_lock(pg_conn, pg_schema, "trips", wait_seconds=1, log=messages.append),
        ):
            pass
        elapsed = time.monotonic() - started
    finally:
        stop(child)
    assert caught.value.table == f"{pg_schema}.trips"
    assert f"another run is loading {pg_schema}.trips" in str(caught.value)
    assert 1.0 <= caught.value.waited <= elapsed < 3
    assert len(messages) >= 2
    assert advisory_locks(pg_conn) == 0


def test_lock_dies_with_a_killed_process(database_url: str, pg_conn: Conn, pg_schema: str) -> None:
    """SIGKILL on the holder frees the table without any cleanup."""
    child = holder(database_url, pg_schema, "trips", hold=60)
    stop(child)
    with table_lock(pg_conn, pg_schema, "trips", wait_seconds=10, log=lambda m: None):
        assert advisory_locks(pg_conn) == 1


def test_other_tables_and_schemas_do_not_contend(
    database_url: str, pg_conn: Conn, pg_schema: str
) -> None:
    """Another table, the same name in another schema, and a dotted look-alike are free."""
    with (
        psycopg.connect(database_url, autocommit=True) as other,
        table_lock(other, f"{pg_schema}.a", "b", wait_seconds=0, log=lambda m: None),
        table_lock(other, pg_schema, "trips", wait_seconds=0, log=lambda m: None),
    ):
        with table_lock(pg_conn, pg_schema, "a.b", wait_seconds=0, log=lambda m: None):
            pass
        with table_lock(pg_conn, pg_schema, "other", wait_seconds=0, log=lambda m: None):
            pass
        with table_lock(pg_conn, "elsewhere", "trips", wait_seconds=0, log=lambda m: None):
            pass
        with pytest.raises(TableBusy):
            with table_lock(pg_conn, pg_schema, "trips", wait_seconds=0, log=lambda m: None):
                pass


def test_lock_is_released_when_the_block_raises(pg_conn: Conn, pg_schema: str) -> None:
    """An exception inside the block still releases the lock."""
    with pytest.raises(RuntimeError), table_lock(pg_conn, pg_schema, "trips", log=lambda m: None):
        assert advisory_locks(pg_conn) == 1
        raise RuntimeError("load failed")
    assert advisory_locks(pg_conn) == 0


def test_env_sets_the_default_wait(
    database_url: str, pg_conn: Conn, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PIPELINE_LOCK_TIMEOUT sets the default wait; a non-number is an IngestError."""
    monkeypatch.setenv("PIPELINE_LOCK_TIMEOUT", "0.5")
    with (
        psycopg.connect(database_url, autocommit=True) as other,
        table_lock(other, pg_schema, "trips", log=lambda m: None),
    ):
        with pytest.raises(TableBusy) as caught:
            with table_lock(pg_conn, pg_schema, "trips", log=lambda m: None):
                pass
        assert 0.5 <= caught.value.waited < 1.5
        monkeypatch.setenv("PIPELINE_LOCK_TIMEOUT", "ten minutes")
        with pytest.raises(IngestError, match="PIPELINE_LOCK_TIMEOUT must be a number"):
            with table_lock(pg_conn, pg_schema, "trips", log=lambda m: None):
                pass


def test_refuses_a_connection_in_transaction_mode(database_url: str, pg_schema: str) -> None:
    """A non-autocommit connection is refused before any lock is taken."""
    with psycopg.connect(database_url) as conn:
        with pytest.raises(ValueError, match="autocommit"):
            with table_lock(conn, pg_schema, "trips", log=lambda m: None):
                pass
