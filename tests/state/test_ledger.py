"""The run ledger against a real PostgreSQL: runs, killed runs, loaded files, fingerprints."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from rich.console import Console

from ingest.runtime.secrets import scrub
from ingest.state import ledger

Conn = psycopg.Connection[Any]
ROOT = Path(__file__).resolve().parents[2]

RUN_THEN_SLEEP = """
import sys, time, psycopg
from ingest.state import ledger
url, schema, run_id = sys.argv[1:]
conn = psycopg.connect(url, autocommit=True)
ledger.ensure_ledger(conn, schema)
ledger.start_run(conn, schema, run_id=run_id, config_hash="h", source="s", file="f.csv",
                 target="raw.t", strategy="eager")
print("started", flush=True)
time.sleep(120)
"""


def start(conn: Conn, schema: str, run_id: str, target: str = "raw.trips") -> None:
    ledger.start_run(
        conn,
        schema,
        run_id=run_id,
        config_hash="abc",
        source="trips",
        file="/data/trips.csv",
        target=target,
        strategy="streaming",
    )


def status_of(conn: Conn, schema: str, run_id: str) -> str:
    rows = {r.run_id: r for r in ledger.recent_runs(conn, schema)}
    return rows[run_id].status


def test_ensure_ledger_survives_concurrent_callers(database_url: str, pg_schema: str) -> None:
    """Four connections creating the ledger at once all succeed and leave both tables."""
    errors: list[BaseException] = []

    def create() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                ledger.ensure_ledger(conn, pg_schema)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with psycopg.connect(database_url, autocommit=True) as conn:
        ledger.ensure_ledger(conn, pg_schema)
        rows = conn.execute(
            "select tablename from pg_tables where schemaname = %s order by 1", (pg_schema,)
        ).fetchall()
    assert [r[0] for r in rows] == ["files", "runs"]


def test_run_round_trip(pg_conn: Conn, pg_schema: str) -> None:
    """A started then finished run reads back with every value, the pid and the host."""
    ledger.ensure_ledger(pg_conn, pg_schema)
    start(pg_conn, pg_schema, "r1")
    running = ledger.recent_runs(pg_conn, pg_schema)
    assert [(r.run_id, r.status, r.finished_at) for r in running] == [("r1", "running", None)]
    ledger.finish_run(
        pg_conn,
        pg_schema,
        "r1",
        status="success",
        rows_read=1000,
        rows_loaded=990,
        rows_rejected=10,
        peak_rss_mb=123.5,
        duration_s=4.25,
        error=None,
    )
    [row] = ledger.recent_runs(pg_conn, pg_schema)
    assert (row.status, row.rows_read, row.rows_loaded, row.rows_rejected) == (
        "success",
        1000,
        990,
        10,
    )
    assert (row.peak_rss_mb, row.duration_s, row.error) == (123.5, 4.25, None)
    assert (row.source, row.file, row.target, row.strategy, row.config_hash) == (
        "trips",
        "/data/trips.csv",
        "raw.trips",
        "streaming",
        "abc",
    )
    assert row.backend_pid == pg_conn.info.backend_pid
    assert row.host == socket.gethostname()
    assert row.finished_at is not None and row.finished_at >= row.started_at


def test_recent_runs_is_newest_first_and_limited(pg_conn: Conn, pg_schema: str) -> None:
    """recent_runs returns the newest runs first, at most `limit`; [] and 0 without a ledger."""
    assert ledger.recent_runs(pg_conn, pg_schema) == []
    assert ledger.mark_stale_runs(pg_conn, pg_schema) == 0
    ledger.ensure_ledger(pg_conn, pg_schema)
    for i in range(3):
        start(pg_conn, pg_schema, f"r{i}")
        time.sleep(0.01)
    assert [r.run_id for r in ledger.recent_runs(pg_conn, pg_schema, limit=2)] == ["r2", "r1"]


def test_finish_run_stores_error_without_the_password(pg_conn: Conn, pg_schema: str) -> None:
    """An error quoting the URL and the password is stored with both scrubbed."""
    ledger.ensure_ledger(pg_conn, pg_schema)
    start(pg_conn, pg_schema, "r1")
    error = "cannot reach postgresql://loader:hunter2@db:5432/x (password=hunter2)"
    ledger.finish_run(
        pg_conn,
        pg_schema,
        "r1",
        status="failed",
        rows_read=5,
        rows_loaded=0,
        rows_rejected=0,
        peak_rss_mb=None,
        duration_s=0.5,
        error=error,
        secrets=["hunter2"],
    )
    [row] = ledger.recent_runs(pg_conn, pg_schema)
    assert row.status == "failed"
    assert row.error == "cannot reach postgresql://loader:***@db:5432/x (password=***)"


def test_finish_run_refuses_unknown_status_and_run(pg_conn: Conn, pg_schema: str) -> None:
    """An unknown status or run id is a ValueError, not a silent no-op."""
    ledger.ensure_ledger(pg_conn, pg_schema)
    fields: dict[str, Any] = dict(
        rows_read=0, rows_loaded=0, rows_rejected=0, peak_rss_mb=0.0, duration_s=0.0, error=None
    )
    with pytest.raises(ValueError, match="unknown run status 'done'"):
        ledger.finish_run(pg_conn, pg_schema, "r1", status="done", **fields)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no run 'missing'"):
        ledger.finish_run(pg_conn, pg_schema, "missing", status="success", **fields)


def test_sigkilled_run_is_marked_killed(database_url: str, pg_conn: Conn, pg_schema: str) -> None:
    """A run whose process is SIGKILLed while 'running' becomes 'killed'; a live one does not."""
    ledger.ensure_ledger(pg_conn, pg_schema)
    start(pg_conn, pg_schema, "alive")
    child = subprocess.Popen(
        [sys.executable, "-c", RUN_THEN_SLEEP, database_url, pg_schema, "doomed"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "started"
        assert ledger.mark_stale_runs(pg_conn, pg_schema) == 0
        assert status_of(pg_conn, pg_schema, "doomed") == "running"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    marked, deadline = 0, time.monotonic() + 10
    while marked == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
        marked = ledger.mark_stale_runs(pg_conn, pg_schema)
    assert marked == 1
    rows = {r.run_id: r for r in ledger.recent_runs(pg_conn, pg_schema)}
    assert rows["doomed"].status == "killed"
    assert rows["doomed"].finished_at is not None
    assert rows["alive"].status == "running"


def record(conn: Conn, schema: str, fp: str, run_id: str, *, replace: bool = False) -> None:
    ledger.record_file(
        conn,
        schema,
        path="/data/trips.csv",
        size=1234,
        mtime=datetime(2026, 1, 2, tzinfo=UTC),
        fingerprint=fp,
        target="raw.trips",
        run_id=run_id,
        replace=replace,
    )


def test_loaded_file_finds_only_committed_content(pg_conn: Conn, pg_schema: str) -> None:
    """A file recorded in a committed transaction is found; other content, other targets and
    a rolled-back transaction are not."""
    ledger.ensure_ledger(pg_conn, pg_schema)
    with pg_conn.transaction():
        record(pg_conn, pg_schema, "full:aaa", "r1")
    with pytest.raises(RuntimeError), pg_conn.transaction():
        record(pg_conn, pg_schema, "full:bbb", "r2")
        raise RuntimeError("the swap failed")
    assert ledger.loaded_file(pg_conn, pg_schema, "raw.trips", "full:aaa") == "r1"
    assert ledger.loaded_file(pg_conn, pg_schema, "raw.trips", "full:bbb") is None
    assert ledger.loaded_file(pg_conn, pg_schema, "raw.other", "full:aaa") is None


def test_record_file_with_replace_forgets_earlier_files(pg_conn: Conn, pg_schema: str) -> None:
    """After a replace, only the replacing file counts as loaded into the target."""
    ledger.ensure_ledger(pg_conn, pg_schema)
    with pg_conn.transaction():
        record(pg_conn, pg_schema, "full:aaa", "r1")
        record(pg_conn, pg_schema, "full:bbb", "r2")
    with pg_conn.transaction():
        record(pg_conn, pg_schema, "full:ccc", "r3", replace=True)
    assert ledger.loaded_file(pg_conn, pg_schema, "raw.trips", "full:aaa") is None
    assert ledger.loaded_file(pg_conn, pg_schema, "raw.trips", "full:ccc") == "r3"


def flip(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_fingerprint_of_small_file_sees_a_middle_byte(tmp_path: Path) -> None:
    """A file small enough to hash whole changes fingerprint when one middle byte changes."""
    path = tmp_path / "small.csv"
    path.write_bytes(b"id,name\n" + b"1,abc\n" * 100_000)
    before = ledger.fingerprint(path)
    assert before.startswith("full:") and before == ledger.fingerprint(path, full=True)
    flip(path, path.stat().st_size // 2)
    assert ledger.fingerprint(path) != before


def test_fingerprint_of_large_file_is_sampled(tmp_path: Path) -> None:
    """Past 6 MiB it reads the sampled ranges only: a byte there counts, a byte between them
    does not (the documented limit), and `full=True` or a size change catches everything."""
    path = tmp_path / "big.bin"
    size = 64 * 1024 * 1024
    with path.open("wb") as handle:
        handle.truncate(size)
    ranges = ledger.sample_ranges(size)
    assert len(ranges) == 66 and sum(n for _, n in ranges) == 6 * 1024 * 1024
    before, before_full = ledger.fingerprint(path), ledger.fingerprint(path, full=True)
    assert before.startswith("sampled:") and before_full.startswith("full:")

    gap = ranges[32][0] + ranges[32][1] + 10  # just past a sampled block, before the next
    assert all(not start <= gap < start + n for start, n in ranges)
    flip(path, gap)
    assert ledger.fingerprint(path) == before
    assert ledger.fingerprint(path, full=True) != before_full

    flip(path, ranges[32][0] + 5)
    assert ledger.fingerprint(path) != before
    with path.open("ab") as handle:
        handle.write(b"\n")
    assert ledger.fingerprint(path) != before


def test_describe_file_records_size_and_mtime(tmp_path: Path) -> None:
    """describe_file gives the size, a UTC mtime and the fingerprint."""
    path = tmp_path / "a.csv"
    path.write_text("a\n1\n")
    facts = ledger.describe_file(path)
    assert facts.size == 4
    assert facts.mtime.tzinfo is UTC
    assert facts.mtime.timestamp() == pytest.approx(path.stat().st_mtime)
    assert facts.fingerprint == ledger.fingerprint(path)


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("auth failed for s3cr3t!", ["s3cr3t!"], "auth failed for ***"),
        ("url postgresql://u:p%40ss@h/db", ["p@ss"], "url postgresql://u:***@h/db"),
        ("postgresql://u:whatever@h:5432/db failed", [], "postgresql://u:***@h:5432/db failed"),
        ("host=h password='a b' user=u", [], "host=h password=*** user=u"),
        ("nothing secret here", [None, ""], "nothing secret here"),
    ],
)
def test_scrub_removes_passwords(text: str, secrets: list[str | None], expected: str) -> None:
    """scrub hides given secrets, URL-encoded ones, URL passwords and `password=` values."""
    assert scrub(text, secrets) == expected


def test_config_hash_ignores_secrets_and_key_order() -> None:
    """The hash ignores URLs, passwords and key order, but not a real setting."""
    base = {"database": {"url": "postgresql://u:one@h/db", "schema": "raw"}, "sources": ["a"]}
    other_secret = {"sources": ["a"], "database": {"schema": "raw", "url": "postgresql://x:2@h/db"}}
    changed = {"database": {"url": "postgresql://u:one@h/db", "schema": "stage"}, "sources": ["a"]}
    yaml_text = "database:\n  schema: raw\n  password: zzz\nsources: [a]\n"
    assert ledger.config_hash(base) == ledger.config_hash(other_secret)
    assert ledger.config_hash(base) == ledger.config_hash(yaml_text)
    assert ledger.config_hash(base) != ledger.config_hash(changed)


def test_runs_table_shows_each_run(pg_conn: Conn, pg_schema: str) -> None:
    """The rich table lists status, source, target, rows and a one-line error."""
    ledger.ensure_ledger(pg_conn, pg_schema)
    start(pg_conn, pg_schema, "r1")
    ledger.finish_run(
        pg_conn,
        pg_schema,
        "r1",
        status="failed",
        rows_read=1_500_000,
        rows_loaded=1_234_567,
        rows_rejected=7,
        peak_rss_mb=512.0,
        duration_s=12.34,
        error="[bold]boom[/] first line\nsecond line",
    )
    console = Console(record=True, width=200)
    console.print(ledger.runs_table(ledger.recent_runs(pg_conn, pg_schema)))
    text = console.export_text()
    for expected in ("failed", "trips", "raw.trips", "1,234,567", "12.3 s", "512 MB", "streaming"):
        assert expected in text
    assert "[bold]boom[/] first line…" in text
    assert "second line" not in text
