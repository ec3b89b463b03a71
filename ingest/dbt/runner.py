"""Run the dbt project: source freshness and staging views in PostgreSQL, then DuckDB marts."""

from __future__ import annotations

import getpass
import itertools
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

from psycopg.conninfo import conninfo_to_dict

from ingest.config import PipelineConfig
from ingest.dbt.extensions import extension_dir as extension_dir  # re-exported
from ingest.dbt.extensions import prepare_duckdb_extensions as prepare_duckdb_extensions
from ingest.dbt.profile import plain_url, write_profile
from ingest.dbt.project import PROJECT_ENV, selection, staging_project
from ingest.errors import ConfigError, DbtFailed
from ingest.runtime.memory import available_memory
from ingest.runtime.paths import project_root, state_dir
from ingest.stages.plan import memory_budget

Log = Callable[[str], None]

TARGETS: Final = ("pg", "duckdb")
COLUMN_NAMINGS: Final = ("lower", "upper", "capitalize")
TAIL_LINES: Final = 40
MIB: Final = 1 << 20
# The dbt process itself (dbt-core, adapters, manifest): 214 MB peak RSS measured on the demo.
DBT_PROCESS_BYTES: Final = 300 * MIB
# Below this DuckDB cannot build much of anything; a budget under it still gets it.
DUCKDB_MIN_BYTES: Final = 256 * MIB
# DuckDB's guidance: aggregations and joins want at least ~0.5-1 GB per thread.
DUCKDB_BYTES_PER_THREAD: Final = 1024 * MIB
# DuckDB's limit covers its buffer manager only; leave room for what it allocates outside it.
DUCKDB_LIMIT_SHARE: Final = 0.8

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
    """What a dbt run needs: where PostgreSQL and the marts file are, and the project vars.

    `threads` and `memory_limit` bound the DuckDB marts build (see `duckdb_resources`);
    `threads` is also dbt's concurrency on PostgreSQL. `project_dir` defaults to the repo's.
    """

    database_url: str
    duckdb_path: Path
    home: Path
    raw_schema: str = "raw"
    staging_schema: str = "analytics"
    column_naming: str = "lower"
    threads: int = 2
    memory_limit: str = "1GB"
    project_dir: Path | None = None

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
    """One dbt command on one target, and what to tell the user when it fails."""

    args: tuple[str, ...]
    target: str
    hint: str = ""

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
    """The steps of a full build, in order; each target builds only its own folder.

    Freshness runs first, on every source that declares it (the generated ones do). A project
    with no such source passes it ("Nothing to do"). A declared source whose raw table is
    missing, or empty (no `_loaded_at` to read), or older than its `error_after` fails it, and
    nothing is built: the marts would be built from data that is not there or not current.
    """
    return (
        DbtStep(
            ("source", "freshness"),
            "pg",
            "a raw table is missing, empty or older than its freshness error_after: load it "
            "(invoke ingest), or change the source's freshness in its _<source>__sources.yml",
        ),
        DbtStep(
            ("build",),
            "pg",
            "a source test or a staging contract failed: a raw column that was retyped or "
            "dropped is named in the contract table above",
        ),
        DbtStep(("build",), "duckdb"),
    )


def duckdb_resources(budget_bytes: int, cores: int) -> tuple[str, int]:
    """DuckDB's `memory_limit` and `threads` for a marts build within a memory budget.

    Args:
        budget_bytes: The memory the build may use, as ingest computes it (`plan.memory_budget`).
        cores: CPU cores available.

    Returns:
        The limit as DuckDB reads it (e.g. `"1228MiB"`), and the thread count: one per
        `DUCKDB_BYTES_PER_THREAD` of the limit, at least 1 and at most `cores`.
    """
    room = max(budget_bytes - DBT_PROCESS_BYTES, 0) * DUCKDB_LIMIT_SHARE
    limit = max(int(room), DUCKDB_MIN_BYTES)
    threads = max(1, min(cores, limit // DUCKDB_BYTES_PER_THREAD))
    return f"{limit // MIB}MiB", threads


def settings_from_config(
    config: PipelineConfig,
    database_url: str,
    *,
    memory_limit: int | None = None,
    home: Path | None = None,
) -> DbtSettings:
    """The settings `invoke build` uses: the config's raw schema, naming and memory budget.

    Args:
        config: The pipeline config; its first source's column_naming is the project default
            (generated staging models pin their own in YAML).
        database_url: Where PostgreSQL is.
        memory_limit: Bytes the build may use; default: available RAM less `os_margin`.
        home: The state folder; default `state_dir()`. The marts file is `home/marts.duckdb`.
    """
    home = home or state_dir()
    budget = memory_budget(available_memory(), config.os_configuration.os_margin, memory_limit)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    duckdb_limit, threads = duckdb_resources(budget, cores or 1)
    naming = next(iter(config.sources.values())).schema_config.column_naming or "lower"
    return DbtSettings(
        database_url=database_url,
        duckdb_path=home / "marts.duckdb",
        home=home,
        raw_schema=config.database.schema_,
        column_naming=naming,
        threads=threads,
        memory_limit=duckdb_limit,
        project_dir=staging_project(config),
    )


def project_dir() -> Path:
    """The dbt project folder: `$PIPELINE_DBT_PROJECT`, else `dbt_project/` in the checkout."""
    configured = os.environ.get(PROJECT_ENV)
    return Path(configured) if configured else project_root() / "dbt_project"


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
    """The environment variables the generated `profiles.yml` reads, for both targets.

    Args:
        settings: The run's settings.

    Returns:
        Variables to lay over `os.environ` for the dbt subprocess. Holds PGPASSWORD when the URL
        has one: pass it to the subprocess, never to a log.
    """
    return {
        **pg_env(settings.database_url),
        "DATABASE_URL": plain_url(settings.database_url, with_password=True),
        "DBT_PG_SCHEMA": settings.staging_schema,
        "DBT_THREADS": str(settings.threads),
        "DUCKDB_PATH": str(settings.duckdb_path),
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
    # Each command keeps its own artefacts (manifest, run results, partial-parse cache).
    words = "-".join(a for a in itertools.takewhile(lambda a: not a.startswith("-"), args))
    label = f"{target}-{words}" if words else target
    project_vars = {"raw_schema": settings.raw_schema, "column_naming": settings.column_naming}
    return [
        str(dbt_executable()),
        *args,
        "--project-dir", str(settings.project_dir or project_dir()),
        "--profiles-dir", str(settings.project_dir or project_dir()),
        "--target", target,
        "--target-path", str(state / f"target-{label}"),
        "--log-path", str(state / f"logs-{label}"),
        "--vars", json.dumps(project_vars),
    ]  # fmt: skip


def _stderr(message: str) -> None:
    """Default log: one line to stderr."""
    print(message, file=sys.stderr, flush=True)


def run_dbt(
    args: Sequence[str], target: str, settings: DbtSettings, *, log: Log = _stderr, hint: str = ""
) -> None:
    """Run one dbt command on one target, streaming its output to stderr.

    Args:
        args: The dbt command and its own options, e.g. `["build", "--select", "marts"]`.
        target: `pg` or `duckdb`.
        settings: Connections, paths and project vars.
        log: Receives one line when the command starts.
        hint: What to tell the user after dbt's output when the command fails.

    Raises:
        DbtFailed: dbt exited non-zero; the message ends with the last lines of its output,
            then `hint`.
    """
    command = dbt_command(args, target, settings)
    write_profile(settings.project_dir or project_dir(), settings.database_url, settings.home)
    if target == "duckdb":
        settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **dbt_env(settings)}
    log(f"dbt {' '.join(args)} --target {target}")
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with subprocess.Popen(
        command,
        cwd=settings.project_dir or project_dir(),
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
        if hint:
            tail.append(f"hint: {hint}")
        raise DbtFailed(" ".join(args), target, returncode, "\n".join(tail))


def run_steps(
    steps: Sequence[DbtStep],
    settings: DbtSettings,
    *,
    log: Log = _stderr,
    extra: Callable[[DbtStep], Sequence[str]] = lambda _step: (),
) -> list[StepResult]:
    """Run `steps` in order, stopping at the first failure; return each step's timing.

    `extra(step)` is called just before each step runs and its words are added to the step's.
    """
    results: list[StepResult] = []
    for step in steps:
        started = time.perf_counter()
        run_dbt((*step.args, *extra(step)), step.target, settings, log=log, hint=step.hint)
        seconds = time.perf_counter() - started
        log(f"dbt {step.command} --target {step.target}: ok in {seconds:.1f}s")
        results.append(StepResult(step.command, step.target, seconds))
    return results


def build(
    settings: DbtSettings,
    *,
    select: Sequence[str] = (),
    log: Log = _stderr,
    note: Log | None = None,
) -> list[StepResult]:
    """Check source freshness, build staging in PostgreSQL, then the marts in DuckDB.

    Stops at the first failing step (`build_steps`). A source whose table is missing is left out.

    Args:
        settings: Connections, paths and project vars.
        select: dbt node selectors passed to every step as `--select` (empty: everything).
        log: Receives one line per step start and finish.
        note: Receives one line per source left out (default: `log`).

    Returns:
        One result per step, in order.

    Raises:
        DbtFailed: A step failed; later steps did not run.
    """
    values = {"raw_schema": settings.raw_schema, "DBT_PG_SCHEMA": settings.staging_schema}
    folder = settings.project_dir or project_dir()

    def words(step: DbtStep) -> list[str]:  # just before each step: see `selection`
        return selection(step.target, folder, settings.database_url, values, select, note or log)

    return run_steps(build_steps(), settings, log=log, extra=words)
