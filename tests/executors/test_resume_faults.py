"""The server restarts mid-load: the run fails in one line naming it; the next run resumes.

It runs a private embedded PostgreSQL (it stops it), never the shared one.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from faultkit import home
from launch import command
from rich.console import Console
from test_resume import PARTITIONS, ROWS, _config, _data, _state

from ingest import load_config, run_source
from ingest.pg import embedded

pytestmark = pytest.mark.faults
__all__ = ["home"]  # a fixture, imported to be used here
SCHEMA = "raw"
ROOT = Path(__file__).resolve().parents[2]


def _held(config: Path, point: str, go: Path, act: object) -> tuple[int, str]:
    """Run a load held at `point`, call `act()` there, let it go on: its exit code and stderr."""
    env = {**os.environ, "PIPELINE_CONNECT_RETRY": "1"}
    proc = subprocess.Popen(
        command(config, point, go), cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if f"failpoint {point} reached" in line:
            break
    try:
        assert callable(act)
        act()
    finally:
        go.touch()
    _, err = proc.communicate(timeout=120)
    return proc.returncode, "".join(seen) + err


def test_a_server_restart_fails_the_run_cleanly_and_the_next_run_resumes(
    tmp_path: Path, home: Path
) -> None:
    server = embedded.start(home)
    old = _config(tmp_path, _data(tmp_path / "old.parquet", 1), SCHEMA, server.url, "emp")
    run_source(load_config(old), progress=False)
    with psycopg.connect(server.url) as conn:
        before = _state(conn, SCHEMA, "emp")
    config = _config(tmp_path, _data(tmp_path / "new.parquet"), SCHEMA, server.url, "emp")

    def stop_immediately() -> None:
        assert server.pid is not None
        os.kill(server.pid, signal.SIGQUIT)  # PostgreSQL's immediate shutdown
        deadline = time.monotonic() + 20
        while embedded.status(home) is not None:
            assert time.monotonic() < deadline, "the server did not stop"
            time.sleep(0.05)

    code, stderr = _held(config, "partition", tmp_path / "go", stop_immediately)
    assert code == 1, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"127.0.0.1:{server.port}" in errors[0], stderr
    assert errors[0].endswith(f"{SCHEMA}.emp was not changed; run again")

    embedded.start(home)
    with psycopg.connect(server.url) as conn:
        assert _state(conn, SCHEMA, "emp") == before
    out = io.StringIO()
    report = run_source(load_config(config), console=Console(file=out), progress=False)
    assert report.status == "success"
    assert f"of {PARTITIONS} partitions already loaded" in out.getvalue()
    with psycopg.connect(server.url) as conn:
        assert _state(conn, SCHEMA, "emp")[0] == ROWS
