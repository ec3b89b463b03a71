"""Schema drift: the pure diff and widening rules, and the versioned record in a real PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import polars as pl
import psycopg
import pytest
from psycopg import sql

from ingest.errors import IngestError, SchemaDrift
from ingest.stages.encode import pg_type
from ingest.state.drift import (
    ColumnSpec,
    Drift,
    Nullability,
    Renamed,
    Retyped,
    columns_from_polars,
    decide,
    diff,
    evolve_statements,
    fingerprint,
    normalize_type,
    widens,
)
from ingest.state.schema_history import (
    check,
    ensure_metadata,
    evolve,
    latest_schema,
    record_schema,
    table_columns,
)

Conn = psycopg.Connection[tuple[object, ...]]
C = ColumnSpec
BASE = [C("id", "integer"), C("Email", "text"), C("Age", "integer")]
HOSTILE = ['a"b; drop table x; --', "Robert'); DROP TABLE students;--", "with space", "Ünï €"]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("int4", "integer"),
        ("INT8", "bigint"),
        ("float8", "double precision"),
        ("timestamp without time zone", "timestamp"),
        ("timestamp(3) with time zone", "timestamptz(3)"),
        ("time without time zone", "time"),
        ("character varying(5)", "varchar(5)"),
        ("NUMERIC (20, 0)", "numeric(20,0)"),
        ("interval day to second", "interval day to second"),
        ('"My Type"', '"My Type"'),
    ],
)
def test_normalize_type(raw: str, expected: str) -> None:
    """Every spelling of a type becomes the one the loader writes."""
    assert normalize_type(raw) == expected
    assert C("x", raw).pg_type == expected


@pytest.mark.parametrize(
    "bad", ["int; drop table x", "text)", "integer not null", "text collate c", '"a" ; "b"', ""]
)
def test_column_spec_rejects_non_types(bad: str) -> None:
    """A type is spliced into DDL, so anything but a plain type name is refused."""
    with pytest.raises(ValueError, match="not a PostgreSQL type name"):
        C("x", bad)


@pytest.mark.parametrize(
    ("old", "new", "widening"),
    [
        ("smallint", "integer", True),
        ("integer", "bigint", True),
        ("smallint", "bigint", True),
        ("bigint", "numeric", True),
        ("bigint", "numeric(20,0)", True),
        ("bigint", "numeric(18,0)", False),
        ("integer", "numeric(12,2)", True),
        ("integer", "double precision", True),
        ("smallint", "real", True),
        ("integer", "real", False),  # 2**24 + 1 has no exact float4
        ("bigint", "double precision", False),  # 2**53 + 1 has no exact float8
        ("real", "double precision", True),
        ("numeric(10,2)", "numeric(12,4)", True),
        ("numeric(10,2)", "numeric(10,4)", False),
        ("numeric(10,2)", "numeric", True),
        ("numeric", "numeric(38,10)", False),
        ("date", "timestamp", True),
        ("date", "timestamptz", True),
        ("timestamp", "timestamptz", True),
        ("timestamp(3)", "timestamp", True),
        ("varchar(5)", "varchar(9)", True),
        ("boolean", "text", True),
        ("jsonb", "text", True),
        ("bigint", "integer", False),
        ("double precision", "real", False),
        ("timestamptz", "timestamp", False),
        ("timestamp", "date", False),
        ("text", "integer", False),
        ("boolean", "integer", False),
        ("integer", "integer", False),
    ],
)
def test_widens(old: str, new: str, widening: bool) -> None:
    """Widening means every old value converts exactly; the reverse narrows."""
    assert widens(old, new) is widening


@pytest.mark.parametrize(
    ("old", "new", "kind"),
    [
        ("integer", "bigint", "widening"),
        ("bigint", "integer", "narrowing"),
        ("bigint", "double precision", "narrowing"),
        ("text", "date", "narrowing"),
        ("boolean", "date", "incompatible"),
    ],
)
def test_retyped_kind(old: str, new: str, kind: str) -> None:
    """A type change is labelled widening, narrowing or incompatible."""
    assert Retyped("c", old, new, widens(old, new)).kind == kind


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (
            [*BASE, C("Phone", "text")],
            Drift(added=(C("Phone", "text"),)),
        ),
        (BASE[:2], Drift(removed=(C("Age", "integer"),))),
        (
            [BASE[0], C("e_mail", "text"), BASE[2]],
            Drift(renamed=(Renamed(C("Email", "text"), C("e_mail", "text")),)),
        ),
        (
            [BASE[0], C("EMAIL", "text"), BASE[2]],
            Drift(renamed=(Renamed(C("Email", "text"), C("EMAIL", "text")),)),
        ),
        (
            [BASE[0], BASE[1], C("Ages", "integer")],
            Drift(renamed=(Renamed(C("Age", "integer"), C("Ages", "integer")),)),
        ),
        (
            [BASE[0], C("mail", "integer"), BASE[2]],
            Drift(added=(C("mail", "integer"),), removed=(C("Email", "text"),)),
        ),
        (
            [BASE[0], BASE[1], C("Zip", "integer")],
            Drift(added=(C("Zip", "integer"),), removed=(C("Age", "integer"),)),
        ),
        (
            [BASE[0], BASE[1], C("Age", "bigint")],
            Drift(retyped=(Retyped("Age", "integer", "bigint", True),)),
        ),
        (
            [C("id", "smallint"), *BASE[1:]],
            Drift(retyped=(Retyped("id", "integer", "smallint", False),)),
        ),
        (
            [C("id", "integer", nullable=False), *BASE[1:]],
            Drift(nullability=(Nullability("id", False),)),
        ),
        ([BASE[2], BASE[0], BASE[1]], Drift(reordered=True)),
        (BASE, Drift()),
    ],
    ids=[
        "added",
        "removed",
        "renamed-punct",
        "renamed-case",
        "renamed-ratio",
        "not-renamed-type",
        "not-renamed-name",
        "widened",
        "narrowed",
        "not-null",
        "reordered",
        "same",
    ],
)
def test_diff(new: list[ColumnSpec], expected: Drift) -> None:
    """Each kind of change is found, and only that kind."""
    assert diff(BASE, new) == expected


def test_diff_rename_ignores_position_only_for_equal_names() -> None:
    """A punctuation-only rename is found anywhere; a fuzzy one only at the same position."""
    moved = [C("Agee", "integer"), C("id", "integer"), C("e_mail", "text")]
    found = diff(BASE, moved)
    assert found.renamed == (Renamed(C("Email", "text"), C("e_mail", "text")),)
    assert found.added == (C("Agee", "integer"),)
    assert found.removed == (C("Age", "integer"),)


def test_reorder_alone_is_not_drift() -> None:
    """Loads match columns by name, so a new order is noted but is not drift."""
    found = diff(BASE, list(reversed(BASE)))
    assert found.empty and found.reordered and found.changes() == []


def test_changes_text() -> None:
    """Each change reads as one line a user can act on."""
    new = [C("id", "integer", False), C("e_mail", "text"), C("Age", "bigint"), C("Zip", "text")]
    assert diff(BASE, new).changes() == [
        "column 'Zip' added (text)",
        "column 'e_mail' looks renamed from 'Email'",
        "column 'Age' retyped integer → bigint (widening)",
        "column 'id' became NOT NULL",
    ]
    assert diff(BASE, BASE[:2]).changes() == ["column 'Age' removed"]
    assert diff([C("x", "bigint")], [C("x", "integer")]).changes() == [
        "column 'x' retyped bigint → integer (narrowing)"
    ]


def test_fingerprint_is_stable_and_order_sensitive() -> None:
    """Equal column lists hash equal; order, type and nullability all change the hash."""
    assert fingerprint(BASE) == fingerprint([C("id", "int4"), C("Email", "text"), BASE[2]])
    assert fingerprint(BASE) != fingerprint(list(reversed(BASE)))
    assert fingerprint(BASE) != fingerprint([C("id", "bigint"), *BASE[1:]])
    assert fingerprint(BASE) != fingerprint([C("id", "integer", False), *BASE[1:]])


def test_columns_from_polars() -> None:
    """Specs carry the types `encode.pg_type` creates and the declared NOT NULLs."""
    schema = {"a": pl.Int8(), "b": pl.UInt64(), "c": pl.Datetime("us", "UTC"), "d": pl.String()}
    assert columns_from_polars(schema, not_null={"a"}) == [
        C("a", "smallint", False),
        C("b", "numeric(20,0)"),
        C("c", "timestamptz"),
        C("d", "text"),
    ]


def test_evolve_statements_sql() -> None:
    """Evolve is one ALTER TABLE: add, widen with USING, drop NOT NULL; names are quoted."""
    old = [C("id", "integer", False), C("ts", "timestamp")]
    new = [C("id", "bigint"), C("ts", "timestamptz"), C('we"ird', "numeric(20,0)")]
    [statement] = evolve_statements("raw", "t", diff(old, new))
    assert statement.as_string() == (
        'alter table "raw"."t" add column if not exists "we""ird" numeric(20,0), '
        'alter column "id" type bigint using "id"::bigint, '
        'alter column "ts" type timestamptz using "ts"::timestamp at time zone \'UTC\', '
        'alter column "id" drop not null'
    )


def test_evolve_keeps_removed_nullable_column() -> None:
    """A removed nullable column stays in the table (NULL for new rows): no DDL at all."""
    assert evolve_statements("raw", "t", diff(BASE, BASE[:2])) == []
    assert evolve_statements("raw", "t", diff(BASE, [C("id", "integer", False), *BASE[1:]])) == []


@pytest.mark.parametrize(
    ("new", "column", "reason"),
    [
        ([BASE[0], C("e_mail", "text"), BASE[2]], "e_mail", "evolve never renames"),
        ([C("id", "smallint"), *BASE[1:]], "id", "evolve only widens"),
        ([C("id", "boolean"), *BASE[1:]], "id", "evolve only widens"),
    ],
)
def test_evolve_refuses(new: list[ColumnSpec], column: str, reason: str) -> None:
    """Renames and non-widening retypes are never done silently; the error names the column."""
    with pytest.raises(SchemaDrift) as caught:
        evolve_statements("raw", "t", diff(BASE, new), source="people")
    assert caught.value.source == "people"
    assert caught.value.table == '"raw"."t"'
    assert len(caught.value.changes) == 1
    assert repr(column) in caught.value.changes[0] and reason in caught.value.changes[0]
    # on_drift is evolve already: the fix must not tell the user to set it.
    assert "set on_drift" not in str(caught.value)
    assert "schema_config.data_type" in caught.value.fix


def test_evolve_refuses_removed_not_null_column() -> None:
    """New rows could not fill a removed NOT NULL column, so evolve refuses."""
    with pytest.raises(SchemaDrift, match="'id' removed but NOT NULL"):
        evolve_statements("raw", "t", diff([C("id", "integer", False), *BASE[1:]], BASE[1:]))


def test_decide_policies() -> None:
    """fail raises with every change, warn logs them, evolve returns the DDL."""
    drift = diff(BASE, [*BASE, C("Zip", "text")])
    with pytest.raises(SchemaDrift) as caught:
        decide("fail", "people", "t", drift, print, schema="raw")
    assert caught.value.changes == ["column 'Zip' added (text)"]
    logged: list[str] = []
    assert decide("warn", "people", "t", drift, logged.append, schema="raw") == []
    assert logged == ["source 'people': schema drift (warn): column 'Zip' added (text)"]
    [statement] = decide("evolve", "people", "t", drift, logged.append, schema="raw")
    assert statement.as_string() == 'alter table "raw"."t" add column if not exists "Zip" text'
    with pytest.raises(ValueError, match="unknown on_drift policy 'ignore'"):
        decide("ignore", "people", "t", drift, print, schema="raw")


def test_decide_without_drift() -> None:
    """No drift passes every policy; a reorder is only logged."""
    logged: list[str] = []
    for policy in ("fail", "warn", "evolve"):
        assert decide(policy, "p", "t", diff(BASE, BASE[::-1]), logged.append, schema="r") == []
    assert len(logged) == 3 and all("reordered" in line for line in logged)


# --- integration: a real PostgreSQL ---------------------------------------------------------


def test_record_versions(pg_conn: Conn, pg_schema: str) -> None:
    """Unchanged columns keep the version; a change writes the next one."""
    assert latest_schema(pg_conn, pg_schema, "people") is None
    assert record_schema(pg_conn, pg_schema, "people", "raw.people", BASE, "run1") == 1
    assert record_schema(pg_conn, pg_schema, "people", "raw.people", BASE, "run2") == 1
    changed = [*BASE, C("Zip", "text", False)]
    assert record_schema(pg_conn, pg_schema, "people", "raw.people", changed, "run3") == 2
    assert record_schema(pg_conn, pg_schema, "people", "raw.people", changed, "run4") == 2
    assert record_schema(pg_conn, pg_schema, "other", "raw.other", BASE, "run5") == 1
    assert latest_schema(pg_conn, pg_schema, "people") == (2, changed)
    rows = pg_conn.execute(
        sql.SQL("select source, version, run_id, fingerprint from {} order by 1, 2").format(
            sql.Identifier(pg_schema, "schemas")
        )
    ).fetchall()
    assert rows == [
        ("other", 1, "run5", fingerprint(BASE)),
        ("people", 1, "run1", fingerprint(BASE)),
        ("people", 2, "run3", fingerprint(changed)),
    ]


def test_latest_schema_creates_nothing(pg_conn: Conn) -> None:
    """Reading drift before any run leaves the database untouched."""
    assert latest_schema(pg_conn, "no_such_schema_for_drift", "people") is None
    row = pg_conn.execute("select to_regnamespace('no_such_schema_for_drift')").fetchone()
    assert row == (None,)


def test_record_rolls_back_with_callers_transaction(database_url: str, pg_schema: str) -> None:
    """Recorded in the caller's transaction, a version disappears when that transaction does."""
    with psycopg.connect(database_url) as conn:
        ensure_metadata(conn, pg_schema)
        conn.commit()
        assert record_schema(conn, pg_schema, "people", "t", BASE, "run1") == 1
        conn.rollback()
        assert latest_schema(conn, pg_schema, "people") is None


def _race(database_url: str, n: int, job: Callable[[Conn], object]) -> list[object]:
    """Run `job(conn)` in `n` threads released at once; return results or exceptions."""
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def run(i: int) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            barrier.wait()
            try:
                results[i] = job(conn)
            except Exception as exc:
                results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_setup_and_record(database_url: str, pg_conn: Conn, pg_schema: str) -> None:
    """Processes racing to create the metadata and record one schema agree on version 1."""
    pg_conn.execute(sql.SQL("drop schema {}").format(sql.Identifier(pg_schema)))
    results = _race(
        database_url,
        4,
        lambda conn: record_schema(conn, pg_schema, "people", "t", BASE, "run"),
    )
    assert results == [1, 1, 1, 1]
    count = pg_conn.execute(
        sql.SQL("select count(*) from {}").format(sql.Identifier(pg_schema, "schemas"))
    ).fetchone()
    assert count == (1,)


def test_table_columns_match_loader_types(pg_conn: Conn, pg_schema: str) -> None:
    """What the loader creates reads back as the same specs, lineage columns left out."""
    schema = {
        "i8": pl.Int8(),
        "u32": pl.UInt32(),
        "u64": pl.UInt64(),
        "f32": pl.Float32(),
        "f64": pl.Float64(),
        "dec": pl.Decimal(12, 2),
        "s": pl.String(),
        "b": pl.Boolean(),
        "d": pl.Date(),
        "ts": pl.Datetime("us"),
        "tz": pl.Datetime("us", "UTC"),
        "t": pl.Time(),
        "dur": pl.Duration("us"),
        "bin": pl.Binary(),
        "lst": pl.List(pl.Int64()),
    }
    defs: list[sql.Composable] = [
        sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(pg_type(t))) for n, t in schema.items()
    ]
    defs.append(sql.SQL("_loaded_at timestamptz not null default now()"))
    pg_conn.execute(
        sql.SQL("create table {} ({})").format(
            sql.Identifier(pg_schema, "people"), sql.SQL(", ").join(defs)
        )
    )
    live = table_columns(pg_conn, pg_schema, "people", exclude={"_loaded_at"})
    assert live == columns_from_polars(schema)
    assert diff(columns_from_polars(schema), live or []).empty
    assert table_columns(pg_conn, pg_schema, "missing") is None


def _create(conn: Conn, schema: str, table: str, columns: list[ColumnSpec]) -> None:
    defs = [sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.pg_type)) for c in columns]
    conn.execute(
        sql.SQL("create table {} ({})").format(
            sql.Identifier(schema, table), sql.SQL(", ").join(defs)
        )
    )


def test_evolve_applied_keeps_data(pg_conn: Conn, pg_schema: str) -> None:
    """Evolve adds a column and widens integer → bigint on a real table; the rows survive."""
    _create(pg_conn, pg_schema, "people", BASE)
    table = sql.Identifier(pg_schema, "people")
    pg_conn.execute(
        sql.SQL("insert into {} select g, 'x' || g, g * 2 from generate_series(1, 1000) g").format(
            table
        )
    )
    new = [BASE[0], BASE[1], C("Age", "bigint"), C("Score", "numeric(12,2)")]
    drift = check(pg_conn, pg_schema, "people", pg_schema, "people", new)
    statements = decide("evolve", "people", "people", drift, print, schema=pg_schema)
    evolve(pg_conn, "people", "people", statements)
    version = record_schema(pg_conn, pg_schema, "people", "people", new, "run1")
    assert version == 1
    assert table_columns(pg_conn, pg_schema, "people") == new
    pg_conn.execute(sql.SQL("insert into {} values (1001, 'big', %s, 1.5)").format(table), (2**40,))
    row = pg_conn.execute(
        sql.SQL('select count(*), sum("Age"), count("Score"), sum("Score") from {}').format(table)
    ).fetchone()
    assert row == (1001, 1001 * 1000 + 2**40, 1, Decimal("1.50"))
    assert check(pg_conn, pg_schema, "people", pg_schema, "people", new).empty


def test_evolve_timestamp_to_timestamptz_reads_naive_as_utc(pg_conn: Conn, pg_schema: str) -> None:
    """Naive values become the same instant in UTC whatever the session's TimeZone."""
    _create(pg_conn, pg_schema, "ev", [C("ts", "timestamp"), C("d", "date")])
    table = sql.Identifier(pg_schema, "ev")
    pg_conn.execute(
        sql.SQL("insert into {} values ('2024-03-01 12:30', '2024-03-01')").format(table)
    )
    pg_conn.execute("set timezone = 'America/New_York'")
    new = [C("ts", "timestamptz"), C("d", "timestamptz")]
    drift = diff(table_columns(pg_conn, pg_schema, "ev") or [], new)
    for statement in evolve_statements(pg_schema, "ev", drift):
        pg_conn.execute(statement)
    row = pg_conn.execute(
        sql.SQL(
            "select to_char(ts at time zone 'UTC', 'YYYY-MM-DD HH24:MI'),"
            " to_char(d at time zone 'UTC', 'YYYY-MM-DD HH24:MI') from {}"
        ).format(table)
    ).fetchone()
    assert row == ("2024-03-01 12:30", "2024-03-01 00:00")


def test_evolve_blocked_by_view(pg_conn: Conn, pg_schema: str) -> None:
    """PostgreSQL will not retype a column a view reads; the error names the view."""
    _create(pg_conn, pg_schema, "people", BASE)
    pg_conn.execute(
        sql.SQL('create view {} as select "Age" from {}').format(
            sql.Identifier(pg_schema, "v_people"), sql.Identifier(pg_schema, "people")
        )
    )
    new = [BASE[0], BASE[1], C("Age", "bigint")]
    statements = evolve_statements(pg_schema, "people", diff(BASE, new))
    with pytest.raises(IngestError, match="v_people"):
        evolve(pg_conn, "people", "people", statements)
    assert latest_schema(pg_conn, pg_schema, "people") is None


def test_hostile_names(pg_conn: Conn, pg_schema: str) -> None:
    """Quotes, semicolons and spaces in table, column and source names are data, never SQL."""
    table, source = HOSTILE[0], HOSTILE[1]
    old = [C(HOSTILE[2], "integer"), C(HOSTILE[3], "text")]
    _create(pg_conn, pg_schema, table, old)
    new = [
        C(HOSTILE[2], "bigint"),
        C(HOSTILE[3], "text"),
        C(HOSTILE[0], "date"),
        C(HOSTILE[1], "text"),
    ]
    statements = decide("evolve", source, table, diff(old, new), print, schema=pg_schema)
    evolve(pg_conn, source, table, statements)
    assert record_schema(pg_conn, pg_schema, source, table, new, "run'1") == 1
    assert table_columns(pg_conn, pg_schema, table) == new
    assert latest_schema(pg_conn, pg_schema, source) == (1, new)
    names = pg_conn.execute(
        "select tablename from pg_tables where schemaname = %s order by 1", (pg_schema,)
    ).fetchall()
    assert names == [(table,), ("schemas",)]


def test_check_baselines(pg_conn: Conn, pg_schema: str) -> None:
    """Drift is measured from the recorded schema, else the live table, else there is none."""
    new = [C("id", "integer", False), C("Email", "text"), C("Age", "bigint")]
    assert check(pg_conn, pg_schema, "people", pg_schema, "people", new) == Drift()
    _create(pg_conn, pg_schema, "people", BASE)
    from_table = check(pg_conn, pg_schema, "people", pg_schema, "people", new)
    assert from_table.changes() == ["column 'Age' retyped integer → bigint (widening)"]
    record_schema(pg_conn, pg_schema, "people", "people", [*BASE, C("Zip", "text")], "run1")
    from_record = check(pg_conn, pg_schema, "people", pg_schema, "people", new)
    assert from_record.changes() == [
        "column 'Zip' removed",
        "column 'Age' retyped integer → bigint (widening)",
        "column 'id' became NOT NULL",
    ]


def test_drift_on_a_glob_names_each_file_and_exits_3(
    tmp_path: Path, pg_schema: str, database_url: str
) -> None:
    """`invoke drift` compares every file of a glob, names each, and exits 3 when one drifts."""
    from ingest import load_config, run_source

    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("id,v\n1,x\n")
    cfg = tmp_path / "glob.yml"
    cfg.write_text(f"""
path: {{input_path: '{data}/*.csv'}}
database:
  table_name: g
  if_table_exists: append
  schema: {pg_schema}
  metadata_schema: {pg_schema}
  url: '{database_url}'
""")
    run_source(load_config(cfg), progress=False)
    (data / "b.csv").write_text("id,v,extra\n2,y,z\n")
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "drift", "--config", str(cfg)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PIPELINE_HOME": str(tmp_path / "state")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    assert "a.csv: no drift" in done.stdout
    assert "b.csv: column 'extra' added" in done.stdout
    assert "drift found in 1 of 2 file(s)" in done.stderr
