"""Shared fixtures: a real PostgreSQL (DATABASE_URL, else the embedded server), a test schema."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql


@pytest.fixture(autouse=True)
def _dbt_project_outside_the_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loads write dbt sources; in tests they go to a scratch project, not the repo's."""
    monkeypatch.setenv("PIPELINE_DBT_PROJECT", str(tmp_path / "dbt_scratch"))


REPO_DBT_PROJECT = Path(__file__).resolve().parent.parent / "dbt_project"
# The staging folders the repo ships; loads add others (the demo's CSV source, a user's own).
SHIPPED_STAGING = {"employees"}


def dbt_project_copy(folder: Path) -> Path:
    """A copy of the repo's dbt project with only its shipped staging sources."""
    copy = folder / "dbt_project"
    shutil.copytree(REPO_DBT_PROJECT, copy, ignore=shutil.ignore_patterns("target*", "logs"))
    for staged in (copy / "models/staging").iterdir():
        if staged.is_dir() and staged.name not in SHIPPED_STAGING:
            shutil.rmtree(staged)
    return copy


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """The URL of a real PostgreSQL: `DATABASE_URL` if set, else the project's embedded server."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from ingest.pg import embedded

    already = embedded.status()
    server = embedded.start()
    yield server.url
    if already is None:
        embedded.stop()


@pytest.fixture
def pg_schema(database_url: str) -> Iterator[str]:
    """A fresh, empty schema for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create schema {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


@pytest.fixture
def pg_conn(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to the test database."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use a real database are marked `integration`, so CI can rerun them elsewhere."""
    for item in items:
        if "database_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
