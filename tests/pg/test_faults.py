"""Server faults mid-load (stopped, out of disk): one clear message, the target kept as it was.

Each test runs a private embedded PostgreSQL, never the shared one: it stops or starves it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from test_outcome import run_held, table_state, write_config

from ingest import load_config, run_source
from ingest.demo import employees
from ingest.errors import ServerFault, ServerGone
from ingest.pg import embedded

pytestmark = pytest.mark.faults
SCHEMA = "raw"
PASSWORD = "s3cret-pw"  # trust auth ignores it; it must still never be printed


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


def with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")


def test_server_stopped_mid_copy_says_so_in_one_line(tmp_path: Path, home: Path) -> None:
    """An immediate stop mid-COPY: exit 1, one line naming the server, no password, table kept."""
    server = embedded.start(home)
    url = with_password(server.url)
    old = tmp_path / "old.parquet"
    employees(1_000).write_parquet(old)
    run_source(load_config(write_config(tmp_path, old, SCHEMA, url, "old", 1)), progress=False)
    new = tmp_path / "new.parquet"
    employees(3_000, seed=3).write_parquet(new)
    config = write_config(tmp_path, new, SCHEMA, url, "new", 1)

    def stop_immediately() -> None:
        assert server.pid is not None
        os.kill(server.pid, signal.SIGQUIT)  # PostgreSQL's immediate shutdown
        deadline = time.monotonic() + 20
        while embedded.status(home) is not None:
            assert time.monotonic() < deadline, "the server did not stop"
            time.sleep(0.05)

    done = run_held(config, "copying", tmp_path / "go", stop_immediately)

    assert done.code == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert PASSWORD not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: the server at 127.0.0.1:{server.port}/pipeline went away during the load"
        + errors[0].split("went away during the load", 1)[1]
    ]
    assert errors[0].endswith(f"{SCHEMA}.emp was not changed; run again")
    embedded.start(home)
    with psycopg.connect(server.url) as conn:
        assert table_state(conn, SCHEMA) == (1_000, 1)


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


def test_full_disk_names_the_server_condition_not_a_value(tmp_path: Path, small_disk: Path) -> None:
    """A full data volume mid-COPY is ServerFault "out of disk space", not a refused value."""
    server = embedded.start(small_disk)
    old = tmp_path / "old.parquet"
    employees(1_000).write_parquet(old)
    run_source(
        load_config(write_config(tmp_path, old, SCHEMA, server.url, "old", 1)), progress=False
    )
    new = tmp_path / "new.parquet"
    employees(200_000, seed=3).write_parquet(new)
    config = load_config(write_config(tmp_path, new, SCHEMA, server.url, "new", 1))
    filler = fill(small_disk / "postgres", leave=4 << 20)

    with pytest.raises(ServerFault) as raised:
        run_source(config, progress=False)

    assert not isinstance(raised.value, ServerGone)
    assert raised.value.condition == "is out of disk space"
    assert raised.value.fix == "free space on the server's data volume, then run again"
    assert "No space left on device" in raised.value.reason
    assert "correct or remove that value" not in str(raised.value)
    filler.unlink()
    with psycopg.connect(server.url) as conn:
        assert table_state(conn, SCHEMA) == (1_000, 1)
        status = conn.execute(
            sql.SQL("select status, error from {} order by started_at desc limit 1").format(
                sql.Identifier(SCHEMA, "runs")
            )
        ).fetchone()
    assert status is not None and status[0] == "failed"
    assert "is out of disk space" in str(status[1])
    assert run_source(config, progress=False).status == "success"
    with psycopg.connect(server.url) as conn:
        assert table_state(conn, SCHEMA)[0] == 200_000
