"""Shared fixtures: a real PostgreSQL (DATABASE_URL, else the embedded server), a test schema."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """The URL of a real PostgreSQL: `DATABASE_URL` if set, else the project's embedded server."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from ingest import embedded

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
