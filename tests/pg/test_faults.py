"""Server faults mid-load (stopped, out of disk): one clear message, the target kept as it was.

Each test runs a private embedded PostgreSQL, never the shared one: it stops or starves it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psycopg
import pytest
from configs import write_config
from faultkit import fill, home, small_disk
from psycopg import sql
from test_outcome import run_held, table_state

from ingest import load_config, run_source
from ingest.demo import employees
from ingest.errors_server import ServerFault, ServerGone
from ingest.pg import embedded

pytestmark = pytest.mark.faults
__all__ = ["home", "small_disk"]  # fixtures, imported to be used here
SCHEMA = "raw"
PASSWORD = "s3cret-pw"  # trust auth ignores it; it must still never be printed


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
