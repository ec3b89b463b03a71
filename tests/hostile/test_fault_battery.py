"""Faults, table-driven: signals, ended backends and server trouble at each point of a load.

Every case loads a known table, then replaces it from a child process (tests/launch.py) held at
one hook point, where the fault strikes; then the run goes on. Each asserts the exit code, the
one line that names the condition and what to do (none for SIGKILL: nothing can speak), no
traceback, and either the earlier table unchanged, checksum for checksum, with the ledger
saying the run did not commit, or the new rows exactly, with the ledger saying it did.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from configs import write_config
from faultkit import ROOT, Finished, fill, home, last_run, small_disk, terminate
from launch import command
from psycopg import sql

from ingest import load_config, run_source
from ingest.demo import employees
from ingest.pg import db, embedded

pytestmark = pytest.mark.faults
Conn = psycopg.Connection[tuple[object, ...]]
OLD_ROWS, NEW_ROWS = 1_000, 3_000
POINTS = ("profiled", "staged", "copying", "swapping")
__all__ = ["home", "small_disk"]  # fixtures, imported to be used here


@dataclass(frozen=True)
class Fault:
    """One fault: what strikes at which point, and what the run must then say and leave."""

    name: str
    point: str
    act: str  # SIGINT, SIGTERM, SIGKILL, end:control, end:copy, end:commit, stop, restart, disk
    code: int
    says: tuple[str, ...] = ()  # fragments of the one line naming the condition and the fix
    fix: str = ""  # the fix, when it has a line of its own
    committed: bool = False
    workers: int = 1
    server: str = "shared"  # shared, private (an embedded one), disk (on a small tmpfs)
    rows: int = NEW_ROWS
    ledger: str = ""  # the run's status in the ledger, when not the one its exit code implies


INTERRUPTED = ("interrupted: nothing was changed in {table}; run marked killed; run again",)
GONE = ("went away during the load (", "); {table} was not changed; run again")
SIGNALS = [
    Fault(f"{sig} at {point}", point, sig, code, INTERRUPTED if sig != "SIGKILL" else ())
    for sig, code in (("SIGINT", 130), ("SIGTERM", 143), ("SIGKILL", -9))
    for point in POINTS
]
BACKENDS = [
    Fault("end control at profiled", "profiled", "end:control", 1, GONE),
    Fault("end control at staged", "staged", "end:control", 1, GONE),
    Fault("end control mid-COPY", "copying", "end:control", 1, GONE),
    Fault("end control mid-COPY, 2 workers", "copying", "end:control", 1, GONE, workers=2),
    Fault("end control at the swap", "swapping", "end:control", 0, committed=True),
    Fault("end copy mid-COPY", "copying", "end:copy", 1, GONE),
    Fault("end copy mid-COPY, 2 workers", "copying", "end:copy", 1, GONE, workers=2),
    Fault(
        "end commit at the swap",
        "swapping",
        "end:commit",
        1,
        ("as the commit was sent", "the commit did not happen", "is unchanged; run again"),
    ),
]
SERVER = [
    # A stopped server cannot record the failure: the run stays "running" until the next one.
    Fault(
        "immediate stop mid-COPY", "copying", "stop", 1, GONE, server="private", ledger="running"
    ),
    Fault(
        "immediate stop at staged", "staged", "stop", 1, GONE, server="private", ledger="running"
    ),
    Fault("restart mid-COPY", "copying", "restart", 1, GONE, server="private"),
    Fault(
        "restart mid-COPY, 2 workers", "copying", "restart", 1, GONE, workers=2, server="private"
    ),
    Fault(
        "disk full mid-COPY",
        "copying",
        "disk",
        1,
        ("is out of disk space", "{table} was not changed"),
        fix="fix: free space on the server's data volume, then run again",
        server="disk",
        rows=200_000,
    ),
]
FAULTS = SIGNALS + BACKENDS + SERVER


def checksum(conn: Conn, schema: str) -> tuple[int, str]:
    """Rows and an md5 over every row of `emp` (lineage too): equal only if nothing changed."""
    row = conn.execute(
        sql.SQL("select count(*), md5(string_agg(t::text, '|' order by t::text)) from {} t").format(
            sql.Identifier(schema, "emp")
        )
    ).fetchone()
    assert row is not None
    return int(str(row[0])), str(row[1])


def _pid_of_copy(conn: Conn, schema: str) -> int:
    row = conn.execute(
        "select pid from pg_stat_activity where query ilike 'copy %%' and strpos(query, %s) > 0"
        " order by backend_start limit 1",
        (f'"{schema}"',),
    ).fetchone()
    assert row is not None, "no COPY is running"
    return int(str(row[0]))


def _pid_of_commit(conn: Conn, schema: str) -> int:
    row = conn.execute(
        "select distinct l.pid from pg_locks l join pg_class c on c.oid = l.relation"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = 'emp' and l.pid <> %s",
        (schema, _pid_of_control(conn, schema)),
    ).fetchone()
    assert row is not None, "no transaction holds the table"
    return int(str(row[0]))


def _pid_of_control(conn: Conn, schema: str) -> int:
    row = conn.execute(
        sql.SQL("select backend_pid from {} where status = 'running'").format(
            sql.Identifier(schema, "runs")
        )
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


@dataclass
class Scene:
    """Where a case runs: its fault, the server's URL and schema, and how to stop that server."""

    fault: Fault
    url: str
    schema: str
    home: Path | None = None
    pid: int | None = None


def run_held(
    config: Path, point: str, resume: Path, act: Callable[[int], None], env: dict[str, str]
) -> Finished:
    """Run a load held at `point`, call `act(pid)` there, then let the run go on."""
    proc = subprocess.Popen(
        command(config, point, resume),
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    for line in proc.stderr:
        seen.append(line)
        if f"failpoint {point} reached" in line:
            break
    else:
        proc.wait()
        pytest.fail(f"the run never reached {point}:\n{''.join(seen)}")
    try:
        act(proc.pid)
    finally:
        resume.touch()
    _, err = proc.communicate(timeout=120)
    return Finished(proc.returncode, "".join(seen) + err)


def _action(fault: Fault, scene: Scene, conn: Callable[[], Conn]) -> Callable[[int], None]:
    """What strikes at the point, given the run's process id."""

    def act(child: int) -> None:
        kind = fault.act
        if kind.startswith("SIG"):
            os.kill(child, getattr(signal, kind))
            time.sleep(0.3)  # the run handles it before the hold lets it go on
        elif kind.startswith("end:"):
            find = {"control": _pid_of_control, "copy": _pid_of_copy, "commit": _pid_of_commit}
            with conn() as watch:
                terminate(watch, find[kind[4:]](watch, scene.schema))
        elif kind in ("stop", "restart"):
            assert scene.home is not None and scene.pid is not None
            os.kill(scene.pid, signal.SIGQUIT)  # PostgreSQL's immediate shutdown
            deadline = time.monotonic() + 20
            while embedded.status(scene.home) is not None:
                assert time.monotonic() < deadline, "the server did not stop"
                time.sleep(0.05)
            if kind == "restart":
                scene.pid = embedded.start(scene.home).pid
        elif kind == "disk":
            assert scene.home is not None
            fill(scene.home / "postgres", leave=4 << 20)

    return act


@pytest.fixture
def scene(
    request: pytest.FixtureRequest, database_url: str, pg_schema: str, tmp_path: Path
) -> Iterator[Scene]:
    """The case's server: the shared one (own schema), or a private one started for it."""
    fault: Fault = request.param
    if fault.server == "shared":
        yield Scene(fault, database_url, pg_schema)
        return
    where = request.getfixturevalue("small_disk" if fault.server == "disk" else "home")
    server = embedded.start(where)
    yield Scene(fault, server.url, "raw", where, server.pid)
    filler = where / "postgres" / "filler"
    filler.unlink(missing_ok=True)


@pytest.mark.parametrize("scene", FAULTS, ids=[f.name for f in FAULTS], indirect=True)
def test_fault(scene: Scene, tmp_path: Path) -> None:
    """The run says what happened and what to do, and the database holds what it says."""
    fault = scene.fault
    old = tmp_path / "old.parquet"
    employees(OLD_ROWS).write_parquet(old)
    first = write_config(tmp_path, old, scene.schema, scene.url, "old", fault.workers)
    run_source(load_config(first), progress=False)
    with psycopg.connect(scene.url, autocommit=True) as conn:
        before = checksum(conn, scene.schema)
    new = tmp_path / "new.parquet"
    employees(fault.rows, seed=3).write_parquet(new)
    config = write_config(tmp_path, new, scene.schema, scene.url, "new", fault.workers)

    def connect() -> Conn:
        # With retries: a private server restarted after an immediate stop recovers first.
        return db.connect(scene.url, autocommit=True, retry_seconds=30)

    # A stopped server is not waited for long (the default is 15 s of retries).
    quick = {"PIPELINE_CONNECT_RETRY": "2"} if fault.server != "shared" else {}
    done = run_held(config, fault.point, tmp_path / "go", _action(fault, scene, connect), quick)

    table = f"{scene.schema}.emp"
    assert done.code == fault.code, done.stderr
    assert "Traceback" not in done.stderr
    if fault.says:
        says = [fragment.format(table=table) for fragment in fault.says]
        said = [line for line in done.stderr.splitlines() if all(f in line for f in says)]
        assert len(said) == 1, done.stderr
    assert fault.fix in done.stderr
    if fault.code == -9:
        assert "error:" not in done.stderr
    elif fault.code != 0:
        problems = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(problems) == 1, done.stderr
        if fault.code > 1:  # after the run's own line, what stopped it
            assert problems == ["error: terminated" if fault.code == 143 else "error: interrupted"]
    if scene.home is not None and embedded.status(scene.home) is None:
        embedded.start(scene.home)  # to read what the stopped server kept
    with connect() as conn:
        status, error, has_file = last_run(conn, scene.schema)
        if fault.committed:
            assert checksum(conn, scene.schema)[0] == fault.rows
            assert (status, has_file) == ("success", True)
            loaded = conn.execute(
                sql.SQL('select sum("Employee_ID"), count(distinct _run_id) from {}').format(
                    sql.Identifier(scene.schema, "emp")
                )
            ).fetchone()
            assert loaded == (fault.rows * (fault.rows + 1) // 2, 1)
        else:
            assert checksum(conn, scene.schema) == before
            assert not has_file
            implied = "running" if fault.code == -9 else "killed" if fault.code > 1 else "failed"
            assert status == (fault.ledger or implied)
            if status == "failed":  # the ledger keeps the same reason
                assert fault.says[0].format(table=table) in str(error)


def test_the_battery_with_faults_is_large() -> None:
    """Faults and hostile inputs together keep at least 150 cases."""
    from test_battery import CASES

    assert len(FAULTS) >= 25
    assert len(FAULTS) + len(CASES) >= 150
    assert len({f.name for f in FAULTS}) == len(FAULTS)
