"""dbt staging generation: the YAML it writes, and real dbt builds that catch drifted raw tables."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import psycopg
import pytest
import yaml
from psycopg import sql

from ingest.config import ColumnChecks
from ingest.dbt.runner import DbtSettings, build, run_dbt
from ingest.dbt.schema_yaml import cased_name, jinja_safe
from ingest.dbt.sources import MARK, model_name, write_sources
from ingest.errors import DbtFailed
from ingest.state.drift import ColumnSpec
from tests.conftest import dbt_project_copy

Conn = psycopg.Connection[tuple[object, ...]]
HOSTILE = 'Note "x" {{y}}'
COLUMNS = [
    ColumnSpec("Employee_ID", "bigint", nullable=False),
    ColumnSpec("Age", "bigint"),
    ColumnSpec("Hire Date", "date"),
    ColumnSpec("order", "integer"),
    ColumnSpec("Dept", "text"),
    ColumnSpec("Grade", "smallint"),
    ColumnSpec(HOSTILE, "text"),
]
CHECKS = {
    "Employee_ID": ColumnChecks(nullable=False, unique=True),
    "Dept": ColumnChecks(nullable=False, isin=["HR", "Sales", "yes"]),
    "Grade": ColumnChecks(isin=[1, 2, 3]),
    HOSTILE: ColumnChecks(nullable=False),
}


def generate(root: Path, naming: str = "lower", **kwargs: Any) -> Path:
    """Write source `hr`, table `people` (the module's columns and checks) under `root`."""
    return write_sources(
        root, "hr", "raw", {"people": COLUMNS}, {"people": CHECKS}, column_naming=naming, **kwargs
    )


def load(path: Path) -> dict[str, Any]:
    """A YAML file as dbt reads it, before rendering."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def rendered(text: str) -> str:
    """What dbt makes of a YAML value: it renders every value as a Jinja template."""
    return jinja2.Environment().from_string(text).render(var=lambda name, default: default)


def people(root: Path) -> dict[str, Any]:
    """The `people` table entry of the generated sources YAML."""
    (source,) = load(root / "models/staging/hr/_hr__sources.yml")["sources"]
    (table,) = source["tables"]
    assert isinstance(table, dict)
    return table


def model(root: Path, name: str = "stg_hr__people") -> dict[str, Any]:
    """One model entry of the generated models YAML."""
    models = load(root / "models/staging/hr/_hr__models.yml")["models"]
    (entry,) = [m for m in models if m["name"] == name]
    assert isinstance(entry, dict)
    return entry


@pytest.mark.parametrize(
    ("name", "naming", "expected"),
    [
        ("HireDate", "lower", "hire_date"),
        ("Hire date", "capitalize", "Hire_date"),
        ("EmployeeID", "upper", "EMPLOYEE_ID"),
        ("_loaded_at", "capitalize", "_loaded_at"),
        (HOSTILE, "lower", "note_x_y"),
    ],
)
def test_cased_name_follows_the_macro(name: str, naming: str, expected: str) -> None:
    """It splits camel case, replaces runs of other characters with one _ and applies the case."""
    assert cased_name(name, naming) == expected


@pytest.mark.parametrize(
    "text", ["plain: text", "a{{b}}", "{# not a comment", "x {% endraw %} y's \\ {{z}}"]
)
def test_jinja_safe_text_renders_back_verbatim(text: str) -> None:
    """It wraps text that Jinja would interpret so that rendering gives the text back."""
    assert rendered(jinja_safe(text)) == text
    assert (jinja_safe(text) == text) == ("{" not in text)


def test_sources_list_every_column_with_type_tests_and_freshness(tmp_path: Path) -> None:
    """It writes types, not_null/unique/accepted_values from the checks, lineage and freshness."""
    path = generate(tmp_path)

    (source,) = load(path)["sources"]
    assert source["name"] == "hr"
    assert rendered(source["schema"]) == "raw"
    assert source["quoting"] == {"schema": True, "identifier": True}
    assert source["config"] == {
        "loaded_at_field": "_loaded_at",
        "freshness": {
            "warn_after": {"count": 24, "period": "hour"},
            "error_after": {"count": 48, "period": "hour"},
        },
    }
    columns = people(tmp_path)["columns"]
    assert [rendered(c["name"]) for c in columns] == [
        "Employee_ID", "Age", "Hire Date", "order", "Dept", "Grade", '"Note ""x"" {{y}}"',
        "_loaded_at", "_run_id",
    ]  # fmt: skip
    assert [c["data_type"] for c in columns] == [
        "bigint", "bigint", "date", "integer", "text", "smallint", "text", "timestamptz", "uuid",
    ]  # fmt: skip
    tests = {rendered(c["name"]): c.get("data_tests", []) for c in columns}
    assert tests["Employee_ID"] == ["not_null", "unique"]
    assert tests["Dept"] == [
        "not_null", {"accepted_values": {"arguments": {"values": ["HR", "Sales", "yes"]}}},
    ]  # fmt: skip
    assert tests["Grade"] == [
        {"accepted_values": {"arguments": {"values": [1, 2, 3], "quote": False}}}
    ]
    assert tests['"Note ""x"" {{y}}"'] == ["not_null"]
    assert tests["Age"] == tests["_loaded_at"] == tests["_run_id"] == []
    assert columns[1]["description"] == "Loaded from the file's column Age (bigint)."


def test_hostile_names_are_quoted_for_yaml_jinja_and_postgres(tmp_path: Path) -> None:
    """It quotes mixed case and keywords, escapes `"` itself and keeps Jinja from rendering."""
    generate(tmp_path)

    columns = {rendered(c["name"]): c for c in people(tmp_path)["columns"]}
    assert {name: c.get("quote", False) for name, c in columns.items()} == {
        "Employee_ID": True, "Age": True, "Hire Date": True, "order": True, "Dept": True,
        "Grade": True, '"Note ""x"" {{y}}"': False, "_loaded_at": False, "_run_id": False,
    }  # fmt: skip
    hostile = columns['"Note ""x"" {{y}}"']
    assert rendered(hostile["description"]) == f"Loaded from the file's column {HOSTILE} (text)."


def test_a_table_name_that_is_no_identifier_gets_one(tmp_path: Path) -> None:
    """It names the dbt table and model in snake case and points `identifier` at the real table."""
    write_sources(tmp_path, "HR Feed", "raw", {"People 2024": COLUMNS[:2]}, {})

    sources = load(tmp_path / "models/staging/hr_feed/_hr_feed__sources.yml")["sources"]
    (table,) = sources[0]["tables"]
    assert (sources[0]["name"], table["name"], table["identifier"]) == (
        "hr_feed",
        "people_2024",
        "People 2024",
    )
    assert model_name("HR Feed", "People 2024") == "stg_hr_feed__people_2024"
    sql_text = (tmp_path / "models/staging/hr_feed/stg_hr_feed__people_2024.sql").read_text()
    assert "source('hr_feed', 'people_2024')" in sql_text


@pytest.mark.parametrize(
    ("naming", "names", "quoted"),
    [
        ("lower", ["employee_id", "age", "hire_date", "order", "dept"], {"order"}),
        ("upper", ["EMPLOYEE_ID", "AGE", "HIRE_DATE", "ORDER", "DEPT"], "all"),
        ("capitalize", ["Employee_id", "Age", "Hire_date", "Order", "Dept"], "all-but-lineage"),
    ],
)
def test_models_yaml_names_columns_after_renaming(
    tmp_path: Path, naming: str, names: list[str], quoted: object
) -> None:
    """It lists the renamed columns with their types under an enforced contract and the naming."""
    generate(tmp_path, naming)

    entry = model(tmp_path)
    assert entry["config"] == {"contract": {"enforced": True}, "meta": {"column_naming": naming}}
    columns = entry["columns"]
    assert [c["name"] for c in columns[:5]] == names
    assert [c["data_type"] for c in columns] == [c.pg_type for c in COLUMNS] + [
        "timestamptz",
        "uuid",
    ]
    flagged = {c["name"] for c in columns if c.get("quote")}
    if quoted == "all":
        assert flagged == {c["name"] for c in columns}
    elif quoted == "all-but-lineage":
        assert flagged == {c["name"] for c in columns} - {"_loaded_at", "_run_id"}
    else:
        assert flagged == quoted


def test_hand_edits_survive_a_refresh(tmp_path: Path) -> None:
    """It keeps edited descriptions and added model tests, and refreshes the untouched defaults."""
    path = generate(tmp_path)
    sources = load(path)
    table = sources["sources"][0]["tables"][0]
    sources["sources"][0]["description"] = "HR exports."
    table["description"] = "One row per employee."
    table["columns"][0]["description"] = "Badge number."
    table["columns"][1]["description"] = "Loaded from the file's column Age (bigint). In years."
    path.write_text(yaml.safe_dump(sources, sort_keys=False))
    models_path = path.with_name("_hr__models.yml")
    models = load(models_path)
    models["models"][0]["description"] = "People, cleaned."
    models["models"][0]["columns"][0].update(description="The key.", data_tests=["unique"])
    models_path.write_text(MARK + "\n" + yaml.safe_dump(models, sort_keys=False))
    retyped = [COLUMNS[0], ColumnSpec("Age", "text"), *COLUMNS[2:]]

    write_sources(tmp_path, "hr", "raw", {"people": retyped}, {"people": CHECKS})

    (source,) = load(path)["sources"]
    columns = source["tables"][0]["columns"]
    assert (source["description"], source["tables"][0]["description"]) == (
        "HR exports.",
        "One row per employee.",
    )
    assert columns[0]["description"] == "Badge number."
    assert columns[1]["description"] == "Loaded from the file's column Age (bigint). In years."
    assert columns[1]["data_type"] == "text"
    assert columns[2]["description"] == "Loaded from the file's column Hire Date (date)."
    entry = model(tmp_path)
    assert entry["description"] == "People, cleaned."
    assert entry["columns"][0] == {
        "name": "employee_id",
        "data_type": "bigint",
        "description": "The key.",
        "data_tests": ["unique"],
    }
    assert entry["columns"][1] == {
        "name": "age",
        "data_type": "text",
        "description": "Raw column Age (text).",
    }


def test_hand_written_model_files_are_left_alone(tmp_path: Path) -> None:
    """It never overwrites a staging model, nor a models YAML without the generated marker."""
    folder = tmp_path / "models/staging/hr"
    folder.mkdir(parents=True)
    (folder / "stg_hr__people.sql").write_text("select 1 as one\n")
    (folder / "_hr__models.yml").write_text("version: 2\nmodels:\n  - name: stg_hr__people\n")

    path = generate(tmp_path)

    assert (folder / "stg_hr__people.sql").read_text() == "select 1 as one\n"
    assert (folder / "_hr__models.yml").read_text() == (
        "version: 2\nmodels:\n  - name: stg_hr__people\n"
    )
    assert len(people(tmp_path)["columns"]) == 9
    assert path.read_text().startswith(MARK)


def test_a_refresh_of_one_table_keeps_the_others(tmp_path: Path) -> None:
    """It refreshes the tables it is given and keeps the source's other tables and models."""
    generate(tmp_path)

    write_sources(tmp_path, "hr", "raw", {"teams": [ColumnSpec("Team", "text")]}, {})

    (source,) = load(tmp_path / "models/staging/hr/_hr__sources.yml")["sources"]
    assert [t["name"] for t in source["tables"]] == ["people", "teams"]
    assert [c["name"] for c in model(tmp_path, "stg_hr__teams")["columns"]] == [
        "team",
        "_loaded_at",
        "_run_id",
    ]
    assert len(model(tmp_path)["columns"]) == 9


def test_names_that_collide_after_renaming_are_refused(tmp_path: Path) -> None:
    """It names both columns when two become the same staging column, and writes nothing."""
    columns = [ColumnSpec("HireDate", "date"), ColumnSpec("hire_date", "date")]

    with pytest.raises(ValueError, match="'HireDate' and 'hire_date' of people both become"):
        write_sources(tmp_path, "hr", "raw", {"people": columns}, {})

    assert not (tmp_path / "models").exists()


def test_freshness_can_be_turned_off(tmp_path: Path) -> None:
    """It leaves freshness out when neither limit is set, and keeps one limit alone."""
    generate(tmp_path, warn_after_hours=None, error_after_hours=None)
    (source,) = load(tmp_path / "models/staging/hr/_hr__sources.yml")["sources"]
    assert "config" not in source

    generate(tmp_path, warn_after_hours=6, error_after_hours=None)
    (source,) = load(tmp_path / "models/staging/hr/_hr__sources.yml")["sources"]
    assert source["config"]["freshness"] == {"warn_after": {"count": 6, "period": "hour"}}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the repo's dbt project without the demo's staging folder, to generate into."""
    copy = dbt_project_copy(tmp_path)
    shutil.rmtree(copy / "models/staging/employees")
    return copy


@pytest.fixture
def staging_schema(database_url: str) -> Iterator[str]:
    """A schema name for the staging views, dropped afterwards."""
    name = f"stg_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


def create_people(conn: Conn, schema: str) -> None:
    """Create `<schema>.people` as ingest would, with the module's columns, and three rows."""
    table = sql.Identifier(schema, "people")
    defs = [sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.pg_type)) for c in COLUMNS]
    conn.execute(
        sql.SQL(
            "create table {} ({}, _loaded_at timestamptz not null default now(), "
            "_run_id uuid not null default gen_random_uuid())"
        ).format(table, sql.SQL(", ").join(defs))
    )
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in COLUMNS)
    conn.cursor().executemany(
        sql.SQL("insert into {} ({}) values (%s, %s, %s, %s, %s, %s, %s)").format(table, names),
        [
            (1, 30, "2020-01-01", 1, "HR", 1, "a"),
            (2, 40, None, 2, "Sales", 3, "{{"),
            (3, 50, "2021-06-30", 3, "yes", 2, "b"),
        ],
    )


def settings_for(url: str, tmp_path: Path, raw: str, staging: str, project: Path) -> DbtSettings:
    """Settings that build `project` and keep every artefact under `tmp_path`."""
    return DbtSettings(
        database_url=url,
        duckdb_path=tmp_path / "marts.duckdb",
        home=tmp_path / "state",
        raw_schema=raw,
        staging_schema=staging,
        project_dir=project,
    )


def view_columns(conn: Conn, schema: str, view: str) -> list[str]:
    """The view's column names in order, as PostgreSQL has them."""
    rows = conn.execute(
        "select column_name::text from information_schema.columns "
        "where table_schema = %s and table_name = %s order by ordinal_position",
        [schema, view],
    ).fetchall()
    return [str(name) for (name,) in rows]


def alter(conn: Conn, schema: str, staging: str, statement: str) -> None:
    """Run `alter table <schema>.people <statement>` after dropping the view that reads it."""
    conn.execute(
        sql.SQL("drop view if exists {}").format(sql.Identifier(staging, "stg_hr__people"))
    )
    conn.execute(sql.SQL("alter table {} " + statement).format(sql.Identifier(schema, "people")))


@pytest.mark.dbt
@pytest.mark.integration
def test_generated_staging_builds_then_fails_on_drift(
    database_url: str,
    pg_schema: str,
    staging_schema: str,
    pg_conn: Conn,
    project: Path,
    tmp_path: Path,
) -> None:
    """It builds and tests the generated staging; a retyped or dropped raw column fails by name."""
    create_people(pg_conn, pg_schema)
    write_sources(project, "hr", "raw", {"people": COLUMNS}, {"people": CHECKS})
    settings = settings_for(database_url, tmp_path, pg_schema, staging_schema, project)

    run_dbt(["build"], "pg", settings, log=lambda _: None)

    results = json.loads((tmp_path / "state/dbt/target-pg-build/run_results.json").read_text())
    statuses = {r["unique_id"].split(".")[2]: r["status"] for r in results["results"]}
    assert statuses["stg_hr__people"] == "success"
    tests = sorted(k for k in statuses if k.startswith("source_"))
    assert [k.split("_hr_people_")[0] for k in tests] == [
        "source_accepted_values", "source_accepted_values", "source_not_null", "source_not_null",
        "source_not_null", "source_unique",
    ]  # fmt: skip
    assert {statuses[k] for k in tests} == {"pass"}
    assert view_columns(pg_conn, staging_schema, "stg_hr__people") == [
        c["name"] for c in model(project)["columns"]
    ]

    alter(pg_conn, pg_schema, staging_schema, 'alter column "Age" type text')
    with pytest.raises(DbtFailed) as retyped:
        run_dbt(["build"], "pg", settings, log=lambda _: None)
    assert "| age " in str(retyped.value)
    assert "data type mismatch" in str(retyped.value)

    alter(pg_conn, pg_schema, staging_schema, 'alter column "Age" type bigint using "Age"::bigint')
    alter(pg_conn, pg_schema, staging_schema, 'drop column "Hire Date"')
    with pytest.raises(DbtFailed) as dropped:
        run_dbt(["build"], "pg", settings, log=lambda _: None)
    assert "| hire_date " in str(dropped.value)
    assert "missing in definition" in str(dropped.value)
    assert "| age " not in str(dropped.value)


@pytest.mark.dbt
@pytest.mark.integration
def test_a_stale_source_stops_the_build_before_staging(
    database_url: str,
    pg_schema: str,
    staging_schema: str,
    pg_conn: Conn,
    project: Path,
    tmp_path: Path,
) -> None:
    """It fails at source freshness when the newest row is past error_after, and builds nothing."""
    create_people(pg_conn, pg_schema)
    pg_conn.execute(
        sql.SQL("update {} set _loaded_at = now() - interval '49 hours'").format(
            sql.Identifier(pg_schema, "people")
        )
    )
    write_sources(project, "hr", "raw", {"people": COLUMNS}, {"people": CHECKS})
    settings = settings_for(database_url, tmp_path, pg_schema, staging_schema, project)

    with pytest.raises(DbtFailed) as caught:
        build(settings, log=lambda _: None)

    assert (caught.value.command, caught.value.target) == ("source freshness", "pg")
    assert "ERROR STALE freshness of hr.people" in str(caught.value)
    assert "hint: a raw table is missing, empty or older than" in str(caught.value)
    assert view_columns(pg_conn, staging_schema, "stg_hr__people") == []
    assert not settings.duckdb_path.exists()


@pytest.mark.dbt
@pytest.mark.integration
@pytest.mark.parametrize("naming", ["upper", "capitalize"])
def test_generated_staging_follows_its_own_naming(
    database_url: str,
    pg_schema: str,
    staging_schema: str,
    pg_conn: Conn,
    project: Path,
    tmp_path: Path,
    naming: str,
) -> None:
    """It names the view's columns per the naming pinned in the models YAML, whatever the var."""
    create_people(pg_conn, pg_schema)
    write_sources(project, "hr", "raw", {"people": COLUMNS}, {}, column_naming=naming)
    settings = settings_for(database_url, tmp_path, pg_schema, staging_schema, project)

    run_dbt(["build"], "pg", settings, log=lambda _: None)

    expected = [cased_name(c.name, naming) for c in COLUMNS] + [
        cased_name("_loaded_at", naming),
        cased_name("_run_id", naming),
    ]
    assert view_columns(pg_conn, staging_schema, "stg_hr__people") == expected
