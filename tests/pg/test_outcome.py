"""The outcome is the truth: a lost connection at the commit never turns into a false report."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from configs import write_config
from faultkit import ROOT, Finished, last_run, terminate
from launch import command
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ingest import load_config, run_source
from ingest.demo import employees
from ingest.errors_server import ServerFault, ServerGone
from ingest.pg.db import is_server_condition, server_fault
from ingest.state.refusal import StreamLog, refusal

Conn = psycopg.Connection[tuple[object, ...]]
OLD_ROWS, NEW_ROWS = 1_000, 3_000
SECRET = "pw-Zq81"


def run_held(
    config: Path, point: str, resume: Path, act: object, env: dict[str, str] | None = None
) -> Finished:
    """Run a load that stops at failpoint `point`, call `act()` there, then let the run go on."""
    proc = subprocess.Popen(
        command(config, point, resume),
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None and proc.stdout is not None
    seen: list[str] = []
    for line in proc.stderr:
        seen.append(line)
        if f"failpoint {point} reached" in line:
            break
    else:
        proc.wait()
        pytest.fail(f"the run never reached failpoint {point}:\n{''.join(seen)}")
    try:
        assert callable(act)
        act()
    finally:
        resume.touch()
    out, err = proc.communicate(timeout=60)
    report = json.loads(out) if out.strip() else {}
    return Finished(proc.returncode, "".join(seen) + err, report)


def table_state(conn: Conn, schema: str) -> tuple[int, int]:
    row = conn.execute(
        sql.SQL("select count(*), count(distinct _run_id) from {}").format(
            sql.Identifier(schema, "emp")
        )
    ).fetchone()
    assert row is not None
    return int(str(row[0])), int(str(row[1]))


def control_pid(conn: Conn, schema: str) -> int:
    """The backend of the running run's control connection (it holds the table's lock)."""
    row = conn.execute(
        sql.SQL("select backend_pid from {} where status = 'running'").format(
            sql.Identifier(schema, "runs")
        )
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def commit_pid(conn: Conn, schema: str) -> int:
    """The backend whose open transaction holds locks on the target (it will commit)."""
    row = conn.execute(
        "select distinct l.pid from pg_locks l join pg_class c on c.oid = l.relation"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = 'emp' and l.pid <> %s",
        (schema, control_pid(conn, schema)),
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


@pytest.fixture
def loaded(tmp_path: Path, database_url: str, pg_schema: str) -> Iterator[Path]:
    """The old table (OLD_ROWS rows, one run) is in place; yields the new file to load."""
    old = tmp_path / "old.parquet"
    employees(OLD_ROWS).write_parquet(old)
    config = write_config(tmp_path, old, pg_schema, database_url, "old", 1)
    run_source(load_config(config), progress=False)
    new = tmp_path / "new.parquet"
    employees(NEW_ROWS, seed=3).write_parquet(new)
    yield new


@pytest.mark.faults
@pytest.mark.parametrize("workers", [1, 2])
def test_control_backend_ended_at_the_commit_reports_the_commit_that_happened(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn, loaded: Path, workers: int
) -> None:
    """The lock's backend ends as the commit is sent: the table is replaced, exit 0, success."""
    config = write_config(tmp_path, loaded, pg_schema, database_url, "new", workers)

    done = run_held(
        config,
        "swapping",
        tmp_path / "go",
        lambda: terminate(pg_conn, control_pid(pg_conn, pg_schema)),
    )

    assert done.code == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert (done.report["status"], done.report["rows_loaded"]) == ("success", NEW_ROWS)
    assert table_state(pg_conn, pg_schema) == (NEW_ROWS, 1)
    assert last_run(pg_conn, pg_schema) == ("success", None, True)


@pytest.mark.faults
@pytest.mark.parametrize("workers", [1, 2])
def test_commit_backend_ended_before_commit_says_it_did_not_happen(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn, loaded: Path, workers: int
) -> None:
    """The committing backend ends before COMMIT: exit 1, "did not happen", old table, failed."""
    config = write_config(tmp_path, loaded, pg_schema, database_url, "new", workers)

    done = run_held(
        config,
        "swapping",
        tmp_path / "go",
        lambda: terminate(pg_conn, commit_pid(pg_conn, pg_schema)),
    )

    assert done.code == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "as the commit was sent" in done.stderr
    assert "the commit did not happen" in done.stderr
    assert "is unchanged; run again" in done.stderr
    assert table_state(pg_conn, pg_schema) == (OLD_ROWS, 1)
    status, error, has_file = last_run(pg_conn, pg_schema)
    assert (status, has_file) == ("failed", False)
    assert error is not None and "the commit did not happen" in error


@pytest.mark.faults
def test_control_backend_ended_mid_copy_fails_cleanly(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn, loaded: Path
) -> None:
    """The lock's backend ends mid-COPY: nothing commits, one clear message, run marked failed."""
    config = write_config(tmp_path, loaded, pg_schema, database_url, "new", 1)

    done = run_held(
        config,
        "copying",
        tmp_path / "go",
        lambda: terminate(pg_conn, control_pid(pg_conn, pg_schema)),
    )

    assert done.code == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "went away during the load" in errors[0]
    assert errors[0].endswith(f"{pg_schema}.emp was not changed; run again")
    assert table_state(pg_conn, pg_schema) == (OLD_ROWS, 1)
    status, error, has_file = last_run(pg_conn, pg_schema)
    assert (status, has_file) == ("failed", False)
    assert error is not None and "went away during the load" in error


class CuttingProxy:
    """A TCP proxy to PostgreSQL that, once armed, drops the next answer and both its sockets.

    Armed just before COMMIT is sent, it lets the server commit and keeps the answer from the
    client: the case where only the server knows the commit went through.
    """

    def __init__(self, host: str, port: int, *, then_refuse: bool = False) -> None:
        self.upstream = (host, port)
        self.then_refuse = then_refuse  # at the cut, drop every connection and take no more
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.armed = threading.Event()
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut.is_set() and self.then_refuse:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            self.pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        try:
            while data := src.recv(65536):
                if answers and self.armed.is_set():
                    self.armed.clear()
                    self.cut.set()
                    if self.then_refuse:  # the network to the server is gone: all of it
                        for pair in self.pairs:
                            for end in pair:
                                _hang_up(end)
                    break
                dst.sendall(data)
        except OSError:
            pass
        for end in (src, dst):
            _hang_up(end)

    def close(self) -> None:
        self.listener.close()


def _hang_up(end: socket.socket) -> None:
    """Close a socket so that its peer and a thread blocked reading it both see the end."""
    try:
        end.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    end.close()


@pytest.mark.faults
def test_answer_to_commit_lost_reports_the_commit_that_went_through(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn, loaded: Path
) -> None:
    """The commit's answer never arrives but the server committed: exit 0, success, said so."""
    parts = conninfo_to_dict(database_url)
    proxy = CuttingProxy(str(parts.get("host") or "127.0.0.1"), int(parts.get("port") or 5432))
    url = make_conninfo(database_url, host="127.0.0.1", port=str(proxy.port))
    config = write_config(tmp_path, loaded, pg_schema, url, "new", 1)
    try:
        done = run_held(config, "swapping", tmp_path / "go", proxy.armed.set)
    finally:
        proxy.close()

    assert proxy.cut.is_set()
    assert done.code == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "dropped as the commit was sent" in done.stderr
    assert f"the commit went through: {NEW_ROWS:,} rows are in" in done.stderr
    assert (done.report["status"], done.report["rows_loaded"]) == ("success", NEW_ROWS)
    assert table_state(pg_conn, pg_schema) == (NEW_ROWS, 1)
    assert last_run(pg_conn, pg_schema) == ("success", None, True)


@pytest.mark.faults
def test_commit_answer_lost_and_server_unreachable_says_the_outcome_is_unknown(
    tmp_path: Path,
    database_url: str,
    pg_schema: str,
    pg_conn: Conn,
    loaded: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The commit's answer is lost and the server cannot be asked: exit 1, say what to check."""
    parts = conninfo_to_dict(database_url)
    host, port = str(parts.get("host") or "127.0.0.1"), int(parts.get("port") or 5432)
    proxy = CuttingProxy(host, port, then_refuse=True)
    url = make_conninfo(database_url, host="127.0.0.1", port=str(proxy.port))
    config = write_config(tmp_path, loaded, pg_schema, url, "new", 1)
    try:
        done = run_held(
            config, "swapping", tmp_path / "go", proxy.armed.set, {"PIPELINE_CONNECT_RETRY": "1"}
        )
    finally:
        proxy.close()

    assert proxy.cut.is_set()
    assert done.code == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "went away as the commit of" in errors[0]
    assert "asking it afterwards whether the commit went through failed" in errors[0]
    assert "look for run " in done.stderr and "in the ledger's files table" in done.stderr
    assert "the next run marks it killed" in done.stderr
    assert table_state(pg_conn, pg_schema) == (NEW_ROWS, 1)  # it did go through
    assert last_run(pg_conn, pg_schema) == ("running", None, True)


@pytest.mark.parametrize(
    ("state", "kind", "condition", "fix_starts"),
    [
        ("53100", ServerFault, "is out of disk space", "free space on the server's data volume"),
        ("53200", ServerFault, "is out of memory", "give the server more memory"),
        ("53300", ServerFault, "has too many connections", "close idle sessions"),
        ("53400", ServerFault, "ran out of a resource (53400)", "give the server more"),
        ("57P01", ServerGone, "went away during the load", "run again"),
        ("57P03", ServerGone, "went away during the load", "run again"),
        ("08006", ServerGone, "went away during the load", "run again"),
    ],
)
def test_server_conditions_are_named_not_blamed_on_a_value(
    pg_conn: Conn,
    pg_schema: str,
    database_url: str,
    state: str,
    kind: type,
    condition: str,
    fix_starts: str,
) -> None:
    """A server error of class 53, 08 or 57P0x mid-COPY names the condition and fix, not a row."""
    table = sql.Identifier(pg_schema, "t")
    pg_conn.execute(sql.SQL("create table {} (n int)").format(table))
    pg_conn.execute(
        sql.SQL(
            "create function {}() returns trigger language plpgsql as"
            " $$ begin raise exception {} using errcode = {}; end $$"
        ).format(
            sql.Identifier(pg_schema, "trouble"),
            sql.Literal(f"server trouble for {SECRET}"),
            sql.Literal(state),
        )
    )
    pg_conn.execute(
        sql.SQL(
            "create trigger trouble before insert on {} for each row execute function {}()"
        ).format(table, sql.Identifier(pg_schema, "trouble"))
    )
    with pytest.raises(psycopg.Error) as raised:
        with pg_conn.cursor() as cur, cur.copy(sql.SQL("copy {} from stdin").format(table)) as copy:
            copy.write("1\n")
    error = raised.value
    assert error.sqlstate == state
    assert "COPY t, line 1" in (error.diag.context or "")  # what refusal() reads a row from

    url = make_conninfo(database_url, password=SECRET)
    fault = server_fault(error, url, "t.emp was not changed")

    assert type(fault) is kind
    assert fault is not None and fault.condition == condition
    assert fault.fix.startswith(fix_starts)
    assert fault.reason == "server trouble for ***"
    assert SECRET not in str(fault)
    assert str(fault).endswith("run again")
    assert is_server_condition(error)
    assert refusal(error, StreamLog()) is None


def test_a_refused_value_is_still_a_value(pg_conn: Conn, database_url: str) -> None:
    """A data error (22P02) is neither a server condition nor a server fault."""
    with pytest.raises(psycopg.Error) as raised:
        pg_conn.execute("select 'x'::int")
    assert raised.value.sqlstate == "22P02"
    assert not is_server_condition(raised.value)
    assert server_fault(raised.value, database_url) is None
