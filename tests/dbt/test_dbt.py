"""dbt runner: real dbt builds against a real PostgreSQL and a real DuckDB file."""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ingest.config_load import load_config
from ingest.dbt.query import query
from ingest.dbt.runner import (
    MIB,
    DbtSettings,
    build,
    build_steps,
    dbt_command,
    dbt_env,
    duckdb_resources,
    pg_env,
    prepare_duckdb_extensions,
    settings_from_config,
)
from ingest.errors import ConfigError, DbtFailed, QueryFailed, SourceFileError
from tests.conftest import dbt_project_copy

ROOT = Path(__file__).resolve().parents[2]

DEPARTMENTS = (
    "Engineering",
    "Sales",
    "Marketing",
    "Finance",
    "HR",
    "Operations",
    "Support",
    "Legal",
)
COLUMNS = (
    "Employee_ID", "First_Name", "Last_Name", "Email", "Age", "Salary", "Department",
    "Hire_Date", "Last_Login", "Is_Active",
)  # fmt: skip
PASSWORD = "s3cret-Pa55"
# A writer, as a dbt run on the duckdb target is: it holds the file's lock until killed.
HOLD_LOCK = (
    "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
    "print('locked', flush=True); time.sleep(60)"
)

Row = tuple[int, str, str, str, int, float, str, dt.date, dt.datetime, bool]


def employee_rows(count: int = 400, seed: int = 7) -> list[Row]:
    """Deterministic employees; e-mails carry spaces and capitals for staging to clean."""
    rng = random.Random(seed)
    start = dt.date(2019, 1, 1)
    rows: list[Row] = []
    for i in range(1, count + 1):
        hired = start + dt.timedelta(days=rng.randrange(0, 5 * 365))
        rows.append((
            1000 + i, f"First{i}", f"Last{i}", f"  First{i}.Last{i}@Example.COM ",
            rng.randint(20, 65), round(rng.uniform(30_000, 180_000), 2), rng.choice(DEPARTMENTS),
            hired, dt.datetime(2025, 1, 1) + dt.timedelta(minutes=i), rng.random() < 0.8,
        ))  # fmt: skip
    return rows


def create_raw(conn: psycopg.Connection[tuple[object, ...]], schema: str, rows: list[Row]) -> None:
    """Create `<schema>.employees` as ingest would and COPY `rows` into it."""
    table = sql.Identifier(schema, "employees")
    conn.execute(
        sql.SQL(
            'create table {} ("Employee_ID" bigint not null unique, "First_Name" text, '
            '"Last_Name" text, "Email" text, "Age" bigint, "Salary" double precision, '
            '"Department" text, "Hire_Date" date, "Last_Login" timestamp, "Is_Active" boolean, '
            '"_loaded_at" timestamptz not null default now(), '
            '"_run_id" uuid not null default gen_random_uuid())'
        ).format(table)
    )
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
    with conn.cursor().copy(sql.SQL("copy {} ({}) from stdin").format(table, columns)) as copy:
        for row in rows:
            copy.write_row(row)


@pytest.fixture
def staging_schema(database_url: str) -> Iterator[str]:
    """A schema name for dbt's staging views, dropped afterwards."""
    name = f"stg_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


def settings_for(
    url: str, tmp_path: Path, raw: str, staging: str, naming: str = "lower"
) -> DbtSettings:
    """Settings that keep every dbt artefact and the marts file under `tmp_path`."""
    return DbtSettings(
        database_url=url,
        duckdb_path=tmp_path / "marts.duckdb",
        home=tmp_path / "state",
        raw_schema=raw,
        staging_schema=staging,
        column_naming=naming,
        project_dir=dbt_project_copy(tmp_path),
    )


def raw_headcounts(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> dict[str, int]:
    """Employees per department, counted in PostgreSQL on the raw table."""
    query_ = sql.SQL('select "Department", count(*) from {} group by 1')
    rows = conn.execute(query_.format(sql.Identifier(schema, "employees"))).fetchall()
    return {str(department): int(str(count)) for department, count in rows}


def raw_mean_salaries(
    conn: psycopg.Connection[tuple[object, ...]], schema: str
) -> dict[tuple[str, int], float]:
    """Mean salary per department and hire year, computed in PostgreSQL on the raw table."""
    query_ = sql.SQL(
        'select "Department", extract(year from "Hire_Date")::int, avg("Salary") from {} '
        "group by 1, 2"
    )
    rows = conn.execute(query_.format(sql.Identifier(schema, "employees"))).fetchall()
    return {(str(d), int(str(y))): float(str(mean)) for d, y, mean in rows}


def with_password(url: str) -> str:
    """`url` with a password (the test servers trust loopback, so any password is accepted)."""
    return url if conninfo_to_dict(url).get("password") else make_conninfo(url, password=PASSWORD)


def test_pg_env_takes_every_part_from_the_url() -> None:
    """It maps host, port, user, password and database to the PG* variables libpq reads."""
    env = pg_env("postgresql://ana:p%40ss@db.example:6543/sales?sslmode=require")
    assert env == {
        "PGHOST": "db.example", "PGPORT": "6543", "PGUSER": "ana", "PGPASSWORD": "p@ss",
        "PGDATABASE": "sales", "PGSSLMODE": "require",
    }  # fmt: skip


def test_pg_env_rejects_unknown_parameters_without_echoing_the_url() -> None:
    """It refuses a URL parameter dbt cannot pass on, naming the key but not the password."""
    with pytest.raises(ConfigError) as caught:
        pg_env(f"postgresql://ana:{PASSWORD}@db/sales?krbsrvname=x")
    assert "krbsrvname" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_dbt_env_points_both_targets_at_the_settings(tmp_path: Path) -> None:
    """It sets the connection, the staging schema and the marts file."""
    settings = settings_for("postgresql://u@h:1/d", tmp_path, "raw_x", "stg_x")
    env = dbt_env(settings)
    assert env["DATABASE_URL"] == "postgresql://u@h:1/d"
    assert env["DBT_PG_SCHEMA"] == "stg_x"
    assert env["DUCKDB_PATH"] == str(tmp_path / "marts.duckdb")
    assert env["DBT_SEND_ANONYMOUS_USAGE_STATS"] == "False"
    assert "PGPASSWORD" not in env


def test_prepare_duckdb_extensions_installs_offline_once(tmp_path: Path) -> None:
    """It installs the postgres extension from the wheel, loadable with autoinstall off, once."""
    directory = prepare_duckdb_extensions(tmp_path / "ext")
    (installed,) = directory.rglob("postgres_scanner.duckdb_extension")
    first = installed.stat().st_mtime_ns

    prepare_duckdb_extensions(directory)

    assert installed.stat().st_mtime_ns == first
    config: dict[str, str | bool | int | float | list[str]] = {
        "extension_directory": str(directory),
        "autoinstall_known_extensions": False,
    }
    with duckdb.connect(":memory:", config=config) as con:
        con.load_extension("postgres")
        loaded = con.execute(
            "select loaded from duckdb_extensions() where extension_name = 'postgres_scanner'"
        ).fetchone()
    assert loaded == (True,)


@pytest.mark.parametrize(
    ("budget", "cores", "expected"),
    [
        (16 << 30, 2, ("12867MiB", 2)),  # (16 GiB - 300 MiB) * 0.8; room for both cores
        (1 << 30, 2, ("579MiB", 1)),  # under 1 GiB a thread: one
        (3 << 30, 8, ("2217MiB", 2)),  # two threads' worth of memory, though eight cores
        (64 << 30, 4, ("52188MiB", 4)),  # no more threads than cores
        (100 * MIB, 4, ("256MiB", 1)),  # below the floor: DuckDB gets the floor
    ],
)
def test_duckdb_resources_fit_the_budget(
    budget: int, cores: int, expected: tuple[str, int]
) -> None:
    """It leaves room for the dbt process, keeps a share spare, and gives a thread per GiB."""
    assert duckdb_resources(budget, cores) == expected


def test_settings_from_config_take_schema_naming_and_budget(tmp_path: Path) -> None:
    """It builds settings from the config's raw schema and naming, and the given memory limit."""
    config = load_config(Path(__file__).parents[2] / "config.yml")

    settings = settings_from_config(
        config, "postgresql://u@h/d", memory_limit=2 << 30, home=tmp_path
    )

    assert (settings.raw_schema, settings.column_naming) == ("raw", "lower")
    assert (settings.memory_limit, settings.threads) == ("1398MiB", 1)
    assert settings.duckdb_path == tmp_path / "marts.duckdb"


def test_build_runs_freshness_then_each_target_with_its_own_paths(tmp_path: Path) -> None:
    """It checks freshness, builds pg, then duckdb; each command has its own target folder."""
    steps = build_steps()
    settings = settings_for("postgresql://u@h:1/d", tmp_path, "raw_x", "stg_x")

    assert [(s.command, s.target) for s in steps] == [
        ("source freshness", "pg"),
        ("build", "pg"),
        ("build", "duckdb"),
    ]
    paths = []
    for step in steps:
        command = dbt_command(step.args, step.target, settings)
        paths.append(command[command.index("--target-path") + 1])
    assert [Path(p).name for p in paths] == [
        "target-pg-source-freshness",
        "target-pg-build",
        "target-duckdb-build",
    ]


def test_query_refuses_a_missing_marts_file(tmp_path: Path) -> None:
    """It names the missing marts file instead of creating an empty one."""
    missing = tmp_path / "nope.duckdb"
    with pytest.raises(SourceFileError) as caught:
        query("select 1", missing)
    assert caught.value.path == missing
    assert not missing.exists()


def test_a_query_on_a_missing_table_names_it_and_the_marts(tmp_path: Path) -> None:
    """A refused query is one error naming DuckDB's reason and the marts that exist."""
    path = tmp_path / "marts.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table mart_a as select 1 as x")
    with pytest.raises(QueryFailed) as caught:
        query("select * from nope", path)
    assert "nope" in caught.value.reason
    assert caught.value.marts == ["mart_a"]
    assert "the marts are: mart_a" in str(caught.value)


def test_the_query_task_prints_one_line_for_a_missing_table(tmp_path: Path) -> None:
    """`invoke query` on a missing table exits 1 with one error and no traceback."""
    home = tmp_path / "state"
    home.mkdir()
    with duckdb.connect(str(home / "marts.duckdb")) as con:
        con.execute("create table mart_a as select 1 as x")
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "query", "select * from nope"],
        cwd=ROOT,
        env={**os.environ, "PIPELINE_HOME": str(home), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "the marts are: mart_a" in done.stderr


def test_query_says_when_a_writer_holds_the_marts_file(tmp_path: Path) -> None:
    """It refuses with a clear error while another process (a dbt run) writes the file."""
    path = tmp_path / "marts.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table t as select 42 as answer")
    assert query("select answer from t", path).item() == 42
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(SourceFileError) as caught:
            query("select answer from t", path)
    finally:
        holder.kill()
        holder.wait()
    assert caught.value.reason == "a dbt run is writing the marts database"


@pytest.mark.dbt
@pytest.mark.integration
def test_build_marts_match_the_raw_table(
    database_url: str,
    pg_schema: str,
    staging_schema: str,
    pg_conn: psycopg.Connection[tuple[object, ...]],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """It builds staging then marts; headcounts and salary means equal SQL on the raw table."""
    create_raw(pg_conn, pg_schema, employee_rows())
    url = with_password(database_url)
    logged: list[str] = []
    settings = settings_for(url, tmp_path, pg_schema, staging_schema)

    steps = build(settings, log=logged.append)

    assert [(s.command, s.target) for s in steps] == [
        ("source freshness", "pg"),
        ("build", "pg"),
        ("build", "duckdb"),
    ]
    assert all(s.seconds > 0 for s in steps)
    expected_heads = raw_headcounts(pg_conn, pg_schema)
    heads = query(
        "select department, sum(headcount)::bigint as n from mart_department_salary group by 1",
        settings.duckdb_path,
    )
    assert dict(heads.iter_rows()) == expected_heads
    expected_avg = raw_mean_salaries(pg_conn, pg_schema)
    means = query(
        "select department, hire_year, avg_salary from mart_department_salary",
        settings.duckdb_path,
    )
    assert {(d, y) for d, y, _ in means.iter_rows()} == set(expected_avg)
    for department, year, mean in means.iter_rows():
        assert mean == pytest.approx(expected_avg[(department, year)], abs=0.005)
    months = query(
        "select count(*), sum(hires), max(cumulative_hires) from mart_hires_by_month",
        settings.duckdb_path,
    )
    assert months.row(0)[1:] == (400, 400)
    assert months.row(0)[0] >= 48  # five years of hires, gaps kept as zero rows
    staged = sql.Identifier("pg", staging_schema, "stg_employees__employees")
    emails = query(
        sql.SQL("select count(*) filter (where email = lower(trim(email))), count(*) from {}")
        .format(staged)
        .as_string(),
        settings.duckdb_path,
        attach_pg=url,
        extension_directory=tmp_path / "state" / "duckdb_extensions",
    )
    assert emails.row(0) == (400, 400)
    out, err = capfd.readouterr()
    assert "Completed successfully" in err
    assert PASSWORD not in out + err + "\n".join(logged)


@pytest.mark.dbt
@pytest.mark.integration
def test_build_fails_on_a_dropped_raw_column(
    database_url: str,
    pg_schema: str,
    staging_schema: str,
    pg_conn: psycopg.Connection[tuple[object, ...]],
    tmp_path: Path,
) -> None:
    """It raises DbtFailed naming the missing column, and builds no marts after the failure."""
    create_raw(pg_conn, pg_schema, employee_rows(20))
    pg_conn.execute(
        sql.SQL('alter table {} drop column "Email"').format(sql.Identifier(pg_schema, "employees"))
    )
    settings = settings_for(database_url, tmp_path, pg_schema, staging_schema)

    with pytest.raises(DbtFailed) as caught:
        build(settings, log=lambda _: None)

    assert caught.value.target == "pg"
    assert caught.value.command == "build"
    assert "Email missing from" in str(caught.value)
    assert not settings.duckdb_path.exists()
