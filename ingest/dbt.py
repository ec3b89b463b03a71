"""Run the dbt project: staging views in PostgreSQL (`pg`), then marts in DuckDB (`duckdb`)."""

from __future__ import annotations

import getpass
import json
import os
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import duckdb
import duckdb_extensions
from psycopg.conninfo import conninfo_to_dict

from ingest.errors import ConfigError, DbtFailed
from ingest.paths import project_root

Log = Callable[[str], None]

TARGETS: Final = ("pg", "duckdb")
COLUMN_NAMINGS: Final = ("lower", "upper", "capitalize")
TAIL_LINES: Final = 40

# libpq keyword -> the environment variable libpq itself reads; dbt-postgres (psycopg2) and
# DuckDB's postgres extension both sit on libpq, so one set of PG* variables serves both targets.
_LIBPQ_ENV: Final = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
}
_ANSI: Final = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True, kw_only=True)
class DbtSettings:
    """What a dbt run needs: where PostgreSQL and the marts file are, and the project vars."""

    database_url: str
    duckdb_path: Path
    home: Path
    raw_schema: str = "raw"
    staging_schema: str = "analytics"
    column_naming: str = "lower"
    threads: int = 2
    memory_limit: str = "1GB"

    def __post_init__(self) -> None:
        """Refuse settings dbt would only reject after several seconds of startup."""
        if self.column_naming not in COLUMN_NAMINGS:
            raise ValueError(
                f"column_naming must be one of {COLUMN_NAMINGS}, not {self.column_naming!r}"
            )
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, not {self.threads}")


@dataclass(frozen=True)
class DbtStep:
    """One dbt command on one target."""

    args: tuple[str, ...]
    target: str

    @property
    def command(self) -> str:
        """The command as a user would type it after `dbt`."""
        return " ".join(self.args)


@dataclass(frozen=True)
class StepResult:
    """A dbt step that succeeded and how long it took."""

    command: str
    target: str
    seconds: float


def build_steps() -> tuple[DbtStep, ...]:
    """The steps of a full build, in order; each target builds only its own folder."""
    # `dbt source freshness` on pg belongs first in this tuple once raw sources declare it.
    return (DbtStep(("build",), "pg"), DbtStep(("build",), "duckdb"))


def project_dir() -> Path:
    """The dbt project folder."""
    return project_root() / "dbt_project"


def profiles_dir() -> Path:
    """The folder holding `profiles.yml`."""
    return project_root() / "profiles"


def extension_dir(home: Path) -> Path:
    """Where DuckDB extensions live for this project's state folder."""
    return home / "duckdb_extensions"


def prepare_duckdb_extensions(directory: Path) -> Path:
    """Install DuckDB's postgres extension from its wheel into `directory`, offline; idempotent.

    Args:
        directory: The DuckDB `extension_directory` to fill.

    Returns:
        The directory, ready to pass as `extension_directory`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    config: dict[str, str | bool | int | float | list[str]] = {
        "extension_directory": str(directory),
        "autoinstall_known_extensions": False,
    }
    with duckdb.connect(":memory:", config=config) as con:
        row = con.execute(
            "select installed from duckdb_extensions() where extension_name = 'postgres_scanner'"
        ).fetchone()
        if not (row and row[0]):
            duckdb_extensions.import_extension("postgres", con=con)
    return directory


def pg_env(database_url: str) -> dict[str, str]:
    """The libpq environment variables for `database_url`; host, port, user and database always."""
    try:
        params = conninfo_to_dict(database_url)
    except Exception as exc:  # psycopg raises ProgrammingError; never echo the URL (password)
        raise ConfigError("DATABASE_URL", [f"not a PostgreSQL URL: {type(exc).__name__}"]) from None
    unknown = sorted(set(params) - set(_LIBPQ_ENV))
    if unknown:
        raise ConfigError(
            "DATABASE_URL", [f"parameter {key!r} is not supported for dbt" for key in unknown]
        )
    env = {_LIBPQ_ENV[key]: str(value) for key, value in params.items() if value is not None}
    # dbt-postgres needs these four; fall back like libpq would.
    env.setdefault("PGHOST", os.environ.get("PGHOST", "localhost"))
    env.setdefault("PGPORT", os.environ.get("PGPORT", "5432"))
    env.setdefault("PGUSER", os.environ.get("PGUSER", getpass.getuser()))
    env.setdefault("PGDATABASE", os.environ.get("PGDATABASE", env["PGUSER"]))
    return env


def dbt_env(settings: DbtSettings) -> dict[str, str]:
    """The environment variables `profiles/profiles.yml` reads, for both targets.

    Args:
        settings: The run's settings.

    Returns:
        Variables to lay over `os.environ` for the dbt subprocess. Holds PGPASSWORD when the URL
        has one: pass it to the subprocess, never to a log.
    """
    return {
        **pg_env(settings.database_url),
        "DBT_PROFILES_DIR": str(profiles_dir()),
        "DBT_PG_SCHEMA": settings.staging_schema,
        "DBT_THREADS": str(settings.threads),
        "DUCKDB_PATH": str(settings.duckdb_path),
        "DUCKDB_EXTENSION_DIR": str(extension_dir(settings.home)),
        "DUCKDB_THREADS": str(settings.threads),
        "DUCKDB_MEMORY_LIMIT": settings.memory_limit,
        # No network: no usage stats, no version check.
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        "DO_NOT_TRACK": "1",
        "DBT_VERSION_CHECK": "False",
        "DBT_USE_COLORS": "True" if sys.stderr.isatty() else "False",
    }


def dbt_executable() -> Path:
    """The `dbt` script installed next to this Python, so the run uses this environment's dbt."""
    script = Path(sys.executable).parent / ("dbt.exe" if os.name == "nt" else "dbt")
    if not script.is_file():
        raise FileNotFoundError(f"dbt is not installed next to {sys.executable}; install dbt-core")
    return script


def dbt_command(args: Sequence[str], target: str, settings: DbtSettings) -> list[str]:
    """The full command line for `dbt <args>` on `target`, with its own target and log paths."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
    state = settings.home / "dbt"
    project_vars = {"raw_schema": settings.raw_schema, "column_naming": settings.column_naming}
    return [
        str(dbt_executable()),
        *args,
        "--project-dir", str(project_dir()),
        "--profiles-dir", str(profiles_dir()),
        "--target", target,
        "--target-path", str(state / f"target-{target}"),
        "--log-path", str(state / f"logs-{target}"),
        "--vars", json.dumps(project_vars),
    ]  # fmt: skip


def _stderr(message: str) -> None:
    """Default log: one line to stderr."""
    print(message, file=sys.stderr, flush=True)


def run_dbt(args: Sequence[str], target: str, settings: DbtSettings, *, log: Log = _stderr) -> None:
    """Run one dbt command on one target, streaming its output to stderr.

    Args:
        args: The dbt command and its own options, e.g. `["build", "--select", "marts"]`.
        target: `pg` or `duckdb`.
        settings: Connections, paths and project vars.
        log: Receives one line when the command starts.

    Raises:
        DbtFailed: dbt exited non-zero; the message ends with the last lines of its output.
    """
    command = dbt_command(args, target, settings)
    if target == "duckdb":
        prepare_duckdb_extensions(extension_dir(settings.home))
        settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **dbt_env(settings)}
    log(f"dbt {' '.join(args)} --target {target}")
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with subprocess.Popen(
        command,
        cwd=project_dir(),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stderr.write(line)
            tail.append(_ANSI.sub("", line.rstrip()))
        returncode = process.wait()
    sys.stderr.flush()
    if returncode != 0:
        raise DbtFailed(" ".join(args), target, returncode, "\n".join(tail))


def run_steps(
    steps: Sequence[DbtStep], settings: DbtSettings, *, log: Log = _stderr
) -> list[StepResult]:
    """Run `steps` in order, stopping at the first failure; return each step's timing."""
    results: list[StepResult] = []
    for step in steps:
        started = time.perf_counter()
        run_dbt(step.args, step.target, settings, log=log)
        seconds = time.perf_counter() - started
        log(f"dbt {step.command} --target {step.target}: ok in {seconds:.1f}s")
        results.append(StepResult(step.command, step.target, seconds))
    return results


def build(settings: DbtSettings, *, log: Log = _stderr) -> list[StepResult]:
    """Build staging in PostgreSQL, then the marts in DuckDB; stop at the first failure.

    Args:
        settings: Connections, paths and project vars.
        log: Receives one line per step start and finish.

    Returns:
        One result per step, in order.

    Raises:
        DbtFailed: A step failed; later steps did not run.
    """
    return run_steps(build_steps(), settings, log=log)
