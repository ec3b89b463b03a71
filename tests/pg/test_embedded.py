"""The embedded PostgreSQL server: a real server started in a private state folder per test."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ingest.pg import embedded

PROJECT = Path(embedded.__file__).resolve().parents[2]  # ingest/pg/embedded.py


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A private state folder; its server is stopped and any relocated data removed afterwards."""
    home = tmp_path / "state"
    yield home
    try:
        embedded.stop(home)
    finally:
        link = home / "postgres" / "data"
        if link.is_symlink():  # the data was kept in the shared temp dir (we run as root)
            shutil.rmtree(link.resolve().parent, ignore_errors=True)


def _listen(port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:`port`, standing for another program on that port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def _free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_start_serves_postgres_18_and_is_idempotent(home: Path) -> None:
    """It starts a PostgreSQL 18 with the pipeline database, returns it again, and stops it."""
    server = embedded.start(home)
    with psycopg.connect(server.url) as conn:
        row = conn.execute("select version(), current_database(), current_user").fetchone()
        wal_level = conn.execute("show wal_level").fetchone()
        fsync = conn.execute("show fsync").fetchone()
    assert row is not None and "PostgreSQL 18" in str(row[0])
    assert row[1:] == ("pipeline", "postgres")
    assert (wal_level, fsync) == (("minimal",), ("on",))
    assert server.url == f"postgresql://postgres@127.0.0.1:{server.port}/pipeline"
    assert embedded.status(home) == server
    assert embedded.start(home).pid == server.pid
    assert embedded.stop(home) is True
    assert embedded.status(home) is None
    assert embedded.stop(home) is False


def test_data_folder_is_private_to_the_server_account(home: Path) -> None:
    """The data folder is mode 0700, owned by the account the server runs as (never root)."""
    notes: list[str] = []
    server = embedded.start(home, log=notes.append)
    info = server.data_dir.stat()
    assert info.st_mode & 0o777 == 0o700
    assert info.st_uid != 0
    assert (server.data_dir / "PG_VERSION").read_text().strip() == "18"
    if os.geteuid() == 0:
        assert server.run_as in ("postgres", "nobody")
        assert any(f"as user {server.run_as!r}" in note for note in notes)
    else:
        assert server.run_as is None
        assert info.st_uid == os.getuid()


def test_restart_after_sigkill_keeps_committed_rows(home: Path) -> None:
    """After the postmaster is killed with SIGKILL, start recovers it with committed rows intact."""
    server = embedded.start(home)
    assert server.pid is not None
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("create table kept (n int)")
        conn.execute("insert into kept values (40), (2)")
    os.kill(server.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while embedded.status(home) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert embedded.status(home) is None
    notes: list[str] = []
    again = embedded.start(home, log=notes.append)
    with psycopg.connect(again.url) as conn:
        total = conn.execute("select sum(n) from kept").fetchone()
    assert again.pid != server.pid
    assert total == (42,)
    assert any("stale postmaster.pid" in note for note in notes)


def test_port_avoids_5432_and_moves_when_taken(home: Path) -> None:
    """It never takes a busy 5432, and moves to a free port when its stored one is taken."""
    blockers = [] if not _free(5432) else [_listen(5432)]
    try:
        first = embedded.start(home)
        assert first.port != 5432
        assert first.port >= embedded.FIRST_PORT
        embedded.stop(home)
        blockers.append(_listen(first.port))
        notes: list[str] = []
        moved = embedded.start(home, log=notes.append)
    finally:
        for sock in blockers:
            sock.close()
    assert moved.port not in (first.port, 5432)
    assert any(f"port {first.port} is taken" in note for note in notes)
    assert (moved.data_dir / "port").read_text().strip() == str(moved.port)


def test_concurrent_starts_share_one_server(home: Path) -> None:
    """Two processes starting the same home at once get one and the same server."""
    code = "import sys; from pathlib import Path; from ingest.pg import embedded; "
    code += "print(embedded.start(Path(sys.argv[1])).pid)"
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(home)], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    pids = {proc.communicate(timeout=120)[0].strip() for proc in procs}
    server = embedded.status(home)
    assert all(proc.returncode == 0 for proc in procs)
    assert server is not None
    assert pids == {str(server.pid)}
