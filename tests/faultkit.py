"""Helpers for tests that fault a running load: ledger reads, private servers, full disks.

Shared by tests/pg (test_outcome, test_faults) and the fault battery in tests/hostile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ingest.pg import embedded

Conn = psycopg.Connection[tuple[object, ...]]
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Finished:
    """How a run in a subprocess ended: exit code, stderr, and the JSON report if any."""

    code: int
    stderr: str
    report: dict[str, object] = field(default_factory=dict)


def last_run(conn: Conn, schema: str) -> tuple[str, str | None, bool]:
    """The latest run's status, error, and whether the ledger's files table has its row."""
    row = conn.execute(
        sql.SQL(
            "select r.status, r.error, exists (select 1 from {} f where f.run_id = r.run_id)"
            " from {} r order by r.started_at desc limit 1"
        ).format(sql.Identifier(schema, "files"), sql.Identifier(schema, "runs"))
    ).fetchone()
    assert row is not None
    return str(row[0]), None if row[1] is None else str(row[1]), bool(row[2])


def terminate(conn: Conn, pid: int) -> None:
    """End backend `pid` and wait until it is gone."""
    conn.execute("select pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + 10
    while conn.execute("select 1 from pg_stat_activity where pid = %s", (pid,)).fetchone():
        assert time.monotonic() < deadline, f"backend {pid} did not end"
        time.sleep(0.02)


def _stop(home: Path) -> None:
    try:
        embedded.stop(home)
    finally:
        link = home / "postgres" / "data"
        if link.is_symlink():  # the data was kept in the shared temp dir (we run as root)
            shutil.rmtree(link.resolve().parent, ignore_errors=True)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A private server's state folder; the server is stopped and its data removed afterwards."""
    home = tmp_path / "state"
    yield home
    _stop(home)


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A state folder whose server data lives on a 160 MB tmpfs (needs root to mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    home = Path(tempfile.mkdtemp(prefix="pgloadkit-disk-", dir="/var/tmp"))
    home.chmod(0o755)
    mount = home / "postgres"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160M,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        yield home
    finally:
        try:
            embedded.stop(home)
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)
            shutil.rmtree(home, ignore_errors=True)


def fill(folder: Path, leave: int) -> Path:
    """Fill `folder`'s file system up to `leave` free bytes with one file, which is returned."""
    filler = folder / "filler"
    stats = os.statvfs(folder)
    with filler.open("wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, stats.f_bavail * stats.f_frsize - leave)
    return filler
