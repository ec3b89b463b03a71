"""`pgloadkit doctor` against a real server, an unreachable one, and the embedded default."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from ingest.pg import embedded
from tests.test_cli import UNREACHABLE, one_object, pgloadkit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A private state folder, the repo's dbt project (only read), no database chosen."""
    for name in ("DATABASE_URL", "PGHOST", "PGHOSTADDR", "PGSERVICE", "PIPELINE_PROJECT_DIR"):
        monkeypatch.delenv(name, raising=False)
    return {"PIPELINE_HOME": str(tmp_path / "state"),
            "PIPELINE_DBT_PROJECT": str(ROOT / "dbt_project")}  # fmt: skip


def checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """doctor's checks by name."""
    return {c["name"]: c for c in report["checks"]}


def test_doctor_on_a_working_server_names_it_and_its_version(
    database_url: str, env: dict[str, str]
) -> None:
    """Exit 0: the URL from DATABASE_URL, the server's version and wal_level, dbt, DuckDB."""
    done = pgloadkit("doctor", "--json", env={**env, "DATABASE_URL": database_url})
    assert done.returncode == 0, done.stdout + done.stderr
    report = one_object(done)
    found = checks(report)
    assert report["status"] == "ok" and report["problems"] == 0
    assert found["database"]["detail"].endswith("(from DATABASE_URL)")
    assert found["connection"]["ok"] is True
    assert "answers: PostgreSQL 1" in found["connection"]["detail"]
    assert "wal_level " in found["connection"]["detail"]
    assert found["dbt"]["ok"] and "dbt-duckdb 1.11" in found["dbt"]["detail"]
    assert found["duckdb"]["ok"] and "installed from its wheel" in found["duckdb"]["detail"]
    assert found["memory"]["detail"].startswith("budget ")


def test_doctor_on_an_unreachable_server_exits_1_with_the_fix(env: dict[str, str]) -> None:
    """Exit 1 at once (no retrying), the problem names host:port and the fix; no password."""
    bad = {**env, "DATABASE_URL": UNREACHABLE, "PIPELINE_CONNECT_RETRY": "60"}
    started = time.monotonic()
    done = pgloadkit("doctor", "--json", env=bad)
    assert time.monotonic() - started < 45, "doctor must not wait out the connect retries"
    assert done.returncode == 1, done.stderr
    report = one_object(done)
    connection = checks(report)["connection"]
    assert (report["status"], report["problems"], connection["ok"]) == ("failed", 1, False)
    assert "127.0.0.1:1/db: Connection refused" in connection["detail"]
    assert connection["fix"].startswith("start the server")
    assert "connection: cannot connect" in report["error"]
    assert "s3cret-pw" not in done.stdout + done.stderr
    assert "postgresql://u:***@127.0.0.1:1/db" in checks(report)["database"]["detail"]
    human = pgloadkit("doctor", env=bad)
    assert human.returncode == 1
    assert "✗ connection" in human.stdout and "fix: start the server" in human.stdout
    assert human.stdout.strip().splitlines()[-1] == "1 problem(s)"


def test_doctor_never_starts_the_embedded_server(env: dict[str, str], tmp_path: Path) -> None:
    """With no database configured it names the embedded server, not running, and leaves it so."""
    done = pgloadkit("doctor", "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    found = checks(one_object(done))
    assert found["database"]["detail"].startswith("the embedded server")
    assert found["embedded"]["detail"].startswith("not running")
    assert found["server"]["ok"] is True
    assert embedded.status(tmp_path / "state") is None
