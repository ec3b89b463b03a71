"""The user's dbt flow: ingest, then plain `dbt` from dbt_project/; where loads write dbt files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import duckdb_extension_postgres
import psycopg
import pytest
from dbt.config.renderer import ProfileRenderer
from dbt_common.context import set_invocation_context
from psycopg import sql

from ingest import load_config, run_source, write_demo
from ingest.dbt.profile import plain_url, profile_text
from ingest.dbt.runner import DbtSettings, build
from ingest.dbt.sources import write_sources
from ingest.pg import embedded
from ingest.state.drift import ColumnSpec
from tests.conftest import dbt_project_copy

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-Pa55"
ROWS = 300
Conn = psycopg.Connection[tuple[object, ...]]


def with_password(url: str) -> str:
    """`url` with a password; the test servers trust loopback, so any password is accepted."""
    return plain_url(url, with_password=False).replace("://postgres@", f"://postgres:{PASSWORD}@")


def rendered(
    profile: str, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """The pg target of `profile` as dbt renders it with `environ` as the environment."""
    import yaml

    for key in ("DATABASE_URL", "PGPASSWORD", "PGUSER", "PGSSLMODE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    set_invocation_context(dict(os.environ))  # dbt's env_var reads the run's environment
    data = yaml.safe_load(profile)["pipeline"]["outputs"]["pg"]
    return dict(ProfileRenderer({}).render_data(data))


def test_profile_reads_every_part_of_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """DATABASE_URL wins over the written default; its password is percent-decoded."""
    profile = profile_text("postgresql://ana@db.local:6543/sales", Path("m.duckdb"), Path("x"))
    url = "postgresql://bo%40b:p%40ss%3Aw@10.0.0.5:7000/shop%20db?sslmode=require"
    pg = rendered(profile, {"DATABASE_URL": url}, monkeypatch)
    assert {k: pg[k] for k in ("host", "port", "user", "password", "dbname", "sslmode")} == {
        "host": "10.0.0.5", "port": 7000, "user": "bo@b", "password": "p@ss:w",
        "dbname": "shop db", "sslmode": "require",
    }  # fmt: skip


def test_profile_falls_back_to_the_server_ingest_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without DATABASE_URL it is the address written at load time, PGPASSWORD the password."""
    profile = profile_text("postgresql://ana@db.local:6543/sales", Path("m.duckdb"), Path("x"))
    pg = rendered(profile, {"PGPASSWORD": "from-env"}, monkeypatch)
    assert (pg["host"], pg["port"], pg["user"], pg["dbname"], pg["password"]) == (
        "db.local", 6543, "ana", "sales", "from-env",
    )  # fmt: skip


def test_plain_url_never_writes_the_password() -> None:
    """The URL written to the profile drops the password; the one for dbt's env keeps it."""
    url = f"host=h port=5 dbname=d user=u password={PASSWORD} sslmode=disable"
    assert plain_url(url, with_password=False) == "postgresql://u@h:5/d?sslmode=disable"
    assert PASSWORD in plain_url(url, with_password=True)


def flow_config(
    tmp_path: Path, project: Path | None, schema: str, source: str = "employees"
) -> Path:
    """A config loading a few hundred demo employees into `schema`, writing dbt into `project`."""
    data = write_demo(tmp_path / "data", ROWS).parquet
    path = tmp_path / "flow.yml"
    lines = [f"dbt_project: '{project}'"] if project else []
    lines += [
        f"database: {{schema: {schema}}}",
        "sources:",
        f"  {source}:",
        f"    input_path: '{data}'",
        "    table_name: employees",
        "    if_table_exists: replace",
        "    schema_config: {data_type: {Age: int64, Salary: float64}}",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def plain_dbt(project: Path, home: Path, *args: str, **env: str) -> str:
    """Run `dbt <args>` in `project` as a user would: no flag, an empty HOME, only `env` set."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dbt"), *args],
        cwd=project,
        env={"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return done.stdout


def assert_extension_from_the_wheel(state: Path, home: Path) -> None:
    """The postgres extension came from its wheel into the state folder; nothing under HOME."""
    (installed,) = (state / "duckdb_extensions").rglob("postgres_scanner.duckdb_extension")
    (shipped,) = Path(duckdb_extension_postgres.__file__).parent.rglob("*.duckdb_extension")
    assert installed.stat().st_size == shipped.stat().st_size
    assert list(home.iterdir()) == []  # no ~/.duckdb: no download, no cache outside the state


def mart_headcount(path: Path) -> int:
    """Employees counted by the DuckDB mart."""
    with duckdb.connect(str(path), read_only=True) as con:
        row = con.execute("select sum(headcount) from mart_department_salary").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def staging(database_url: str) -> Iterator[str]:
    """A schema name for dbt's staging views, dropped afterwards."""
    name = f"stg_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


@pytest.mark.dbt
def test_plain_dbt_after_ingest_with_database_url(
    database_url: str,
    pg_schema: str,
    staging: str,
    pg_conn: Conn,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a load, dbt build, test and docs generate run from dbt_project/ with only
    DATABASE_URL set; the extension comes from its wheel; the profile holds no password."""
    project, state, home = dbt_project_copy(tmp_path), tmp_path / "state", tmp_path / "home"
    home.mkdir()
    url = with_password(database_url)
    monkeypatch.delenv("PIPELINE_DBT_PROJECT")
    monkeypatch.setenv("PIPELINE_HOME", str(state))
    monkeypatch.setenv("DATABASE_URL", url)
    run_source(load_config(flow_config(tmp_path, project, pg_schema)))
    assert PASSWORD not in (project / "profiles.yml").read_text(encoding="utf-8")

    env = {"DATABASE_URL": url, "DBT_PG_SCHEMA": staging}
    plain_dbt(project, home, "build", **env)
    view = sql.Identifier(staging, "stg_employees__employees")
    count = pg_conn.execute(sql.SQL("select count(*) from {}").format(view)).fetchone()
    assert count == (ROWS,)
    plain_dbt(project, home, "test", **env)
    plain_dbt(project, home, "build", "--target", "duckdb", **env)
    assert mart_headcount(state / "marts.duckdb") == ROWS
    plain_dbt(project, home, "docs", "generate", **env)
    catalog = json.loads((project / "target" / "catalog.json").read_text(encoding="utf-8"))
    assert "model.pipeline.stg_employees__employees" in catalog["nodes"]
    assert_extension_from_the_wheel(state, home)


@pytest.mark.dbt
def test_plain_dbt_after_ingest_into_the_embedded_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no DATABASE_URL anywhere, ingest starts the embedded server and plain dbt finds it."""
    project, state, home = dbt_project_copy(tmp_path), tmp_path / "state", tmp_path / "home"
    home.mkdir()
    for key in ("DATABASE_URL", "PIPELINE_DBT_PROJECT", "PGHOST", "PGPORT", "PGUSER"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PIPELINE_HOME", str(state))
    try:
        run_source(load_config(flow_config(tmp_path, project, "raw")))
        server = embedded.status(state)
        assert server is not None
        assert f":{server.port}/" in (project / "profiles.yml").read_text(encoding="utf-8")
        plain_dbt(project, home, "build")
        plain_dbt(project, home, "build", "--target", "duckdb")
    finally:
        embedded.stop(state)
    assert mart_headcount(state / "marts.duckdb") == ROWS
    assert_extension_from_the_wheel(state, home)


@pytest.mark.integration
def test_a_load_of_an_adhoc_config_writes_no_dbt_files(
    database_url: str,
    pg_schema: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A config outside the checkout, without dbt_project:, leaves the repo's project alone."""
    source = f"adhoc_{uuid.uuid4().hex[:8]}"
    folder = ROOT / "dbt_project" / "models" / "staging" / source
    monkeypatch.delenv("PIPELINE_DBT_PROJECT")
    monkeypatch.chdir(ROOT)
    try:
        run_source(load_config(flow_config(tmp_path, None, pg_schema, source)))
        assert not folder.exists()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert (
        "dbt sources not written: flow.yml is not the project's config" in capsys.readouterr().err
    )


def settings_for(url: str, tmp_path: Path, raw: str, staging: str, project: Path) -> DbtSettings:
    """Settings keeping every dbt artefact and the marts file under `tmp_path`."""
    return DbtSettings(
        database_url=url,
        duckdb_path=tmp_path / "marts.duckdb",
        home=tmp_path / "state",
        raw_schema=raw,
        staging_schema=staging,
        project_dir=project,
    )


@pytest.mark.dbt
def test_build_leaves_out_a_source_whose_table_is_missing(
    database_url: str,
    pg_schema: str,
    staging: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A staging folder whose raw table is not in this database is left out, with one line
    naming it, and the rest builds."""
    project = dbt_project_copy(tmp_path)
    monkeypatch.delenv("PIPELINE_DBT_PROJECT")
    monkeypatch.setenv("DATABASE_URL", database_url)
    run_source(load_config(flow_config(tmp_path, project, pg_schema)))
    write_sources(project, "dup", pg_schema, {"dup": [ColumnSpec("id", "bigint", True)]}, {})
    logged: list[str] = []
    build(settings_for(database_url, tmp_path, pg_schema, staging, project), log=logged.append)
    note = f'not building source dup on pg: "{pg_schema}"."dup" is not in this database'
    assert sum(line.startswith(note) for line in logged) == 2  # freshness, then the pg build
    assert mart_headcount(tmp_path / "marts.duckdb") == ROWS


@pytest.mark.dbt
def test_build_passes_select_to_every_step(
    database_url: str,
    pg_schema: str,
    staging: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`select` reaches each dbt step: only the chosen model and its tests run."""
    project = dbt_project_copy(tmp_path)
    monkeypatch.delenv("PIPELINE_DBT_PROJECT")
    monkeypatch.setenv("DATABASE_URL", database_url)
    run_source(load_config(flow_config(tmp_path, project, pg_schema)))
    settings = settings_for(database_url, tmp_path, pg_schema, staging, project)
    build(settings, select=["stg_employees__employees"], log=lambda _line: None)
    results = json.loads(
        (settings.home / "dbt" / "target-pg-build" / "run_results.json").read_text("utf-8")
    )
    ran = {r["unique_id"] for r in results["results"]}
    assert "model.pipeline.stg_employees__employees" in ran
    assert not any(node.startswith("test.pipeline.source_") for node in ran)  # source tests
    marts = json.loads(
        (settings.home / "dbt" / "target-duckdb-build" / "run_results.json").read_text("utf-8")
    )
    assert marts["results"] == []
