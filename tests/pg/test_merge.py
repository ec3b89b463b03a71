"""Merges into keyed tables on a real PostgreSQL, each checked row by row against polars."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest
import yaml
from psycopg import sql

from ingest import RunReport, load_config, run_source
from ingest.errors import BadRowsOverLimit, ConfigError
from ingest.errors_keyed import DuplicateKeys, MergeKeyMissing

Conn = psycopg.Connection[tuple[object, ...]]


def write_config(
    tmp_path: Path,
    data: Path,
    schema: str,
    url: str,
    *,
    keys: list[str] | None = None,
    table: str = "items",
    name: str = "c",
    source_name: str = "items",
    **source: Any,
) -> Path:
    """A one-source config merging `data` into `schema.table`."""
    entry: dict[str, Any] = {
        "input_path": str(data),
        "table_name": table,
        "if_table_exists": "merge",
        "primary_key": keys or ["id"],
    }
    entry |= source
    path = tmp_path / f"{name}.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "database": {"schema": schema, "metadata_schema": schema, "url": url},
                "sources": {source_name: entry},
            },
            allow_unicode=True,
        ),
        encoding="utf-8",
    )
    return path


def merge_file(
    tmp_path: Path, frame: pl.DataFrame, schema: str, url: str, name: str, **kw: Any
) -> RunReport:
    """Write `frame` as CSV and merge it; returns the run report."""
    data = tmp_path / f"{name}.csv"
    frame.write_csv(data)
    force = kw.pop("force", False)
    return run_source(
        load_config(write_config(tmp_path, data, schema, url, name=name, **kw)),
        progress=False,
        force=force,
    )


def table_rows(
    conn: Conn,
    schema: str,
    columns: list[str],
    table: str = "items",
    order: list[str] | None = None,
) -> list[tuple[object, ...]]:
    query = sql.SQL("select {} from {} order by {}").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.Identifier(schema, table),
        sql.SQL(", ").join(map(sql.Identifier, order or columns[:1])),
    )
    return [tuple(r) for r in conn.execute(query).fetchall()]


def frame_rows(frame: pl.DataFrame, order: list[str] | None = None) -> list[tuple[object, ...]]:
    return [tuple(r) for r in frame.sort(order or frame.columns[0]).rows()]


OLD = pl.DataFrame(
    {
        "id": list(range(1, 101)),
        "name": [f"name {i}" for i in range(1, 101)],
        "amount": [i * 10 for i in range(1, 101)],
    }
)


def changes() -> pl.DataFrame:
    """Keys 1-10 changed, 11-20 the same as before, 101-110 new."""
    changed = OLD.filter(pl.col("id") <= 10).with_columns(pl.col("amount") + 1)
    same = OLD.filter((pl.col("id") > 10) & (pl.col("id") <= 20))
    new = pl.DataFrame(
        {
            "id": list(range(101, 111)),
            "name": [f"new {i}" for i in range(101, 111)],
            "amount": [-i for i in range(101, 111)],
        }
    )
    return pl.concat([changed, same, new])


def expected(strategy: str, old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """The table after the merge, computed with polars from the two files alone."""
    if strategy == "insert-only":
        return pl.concat([old, new.join(old, on="id", how="anti")])
    return pl.concat([old.join(new, on="id", how="anti"), new])  # upsert, delete-insert


@pytest.mark.parametrize(
    ("strategy", "counts"),
    [
        ("upsert", {"inserted": 10, "updated": 10, "unchanged": 10, "deleted": 0}),
        ("delete-insert", {"inserted": 10, "updated": 20, "unchanged": 0, "deleted": 0}),
        ("insert-only", {"inserted": 10, "updated": 0, "unchanged": 20, "deleted": 0}),
    ],
)
def test_strategy_gives_the_expected_table(
    tmp_path: Path,
    database_url: str,
    pg_schema: str,
    pg_conn: Conn,
    strategy: str,
    counts: dict[str, int],
) -> None:
    """Each strategy's table equals the one polars computes, row by row, and counts what it did."""
    first = merge_file(tmp_path, OLD, pg_schema, database_url, "old", merge={"strategy": strategy})
    assert first.merge["inserted"] == 100
    report = merge_file(
        tmp_path, changes(), pg_schema, database_url, "new", merge={"strategy": strategy}
    )
    assert report.status == "success"
    assert {k: report.merge[k] for k in counts} == counts
    want = expected(strategy, OLD, changes())
    assert table_rows(pg_conn, pg_schema, want.columns) == frame_rows(want)
    ledger = pg_conn.execute(
        sql.SQL(
            "select rows_inserted, rows_updated, rows_unchanged, rows_deleted from {}"
            " where run_id = %s"
        ).format(sql.Identifier(pg_schema, "runs")),
        (report.run_id,),
    ).fetchone()
    assert ledger == tuple(counts.values())
    # Lineage: the rows this run wrote carry its id; the others keep the first run's.
    by_run = dict(
        pg_conn.execute(
            sql.SQL("select _run_id::text, count(*) from {} group by 1").format(
                sql.Identifier(pg_schema, "items")
            )
        ).fetchall()
    )
    written = counts["inserted"] + counts["updated"]
    assert by_run == {_uuid(report.run_id): written, _uuid(first.run_id): 110 - written}


def _uuid(hex_id: str) -> str:
    return str(uuid.UUID(hex_id))


def test_duplicate_keys_keep_the_dedup_sort_winner_and_quarantine_the_rest(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """A key repeated in the load: the row with the highest version stays, the others go aside."""
    merge_file(
        tmp_path, OLD, pg_schema, database_url, "old", merge={"dedup_sort": {"amount": "desc"}}
    )
    new = pl.DataFrame(
        {"id": [5, 5, 200, 5, 200], "name": ["a", "b", "c", "d", "e"], "amount": [1, 9, 3, 4, 3]}
    )
    report = merge_file(
        tmp_path, new, pg_schema, database_url, "new", merge={"dedup_sort": {"amount": "desc"}}
    )
    assert report.merge["duplicates"] == 3
    assert report.merge["inserted"] == 1 and report.merge["updated"] == 1
    rows = table_rows(pg_conn, pg_schema, ["id", "name", "amount"])
    assert (5, "b", 9) in rows
    assert (200, "e", 3) in rows  # a tie: the later line wins
    losers = pg_conn.execute(
        sql.SQL(
            "select row_number, rule, column_name, reason, raw_values from {} order by 1"
        ).format(sql.Identifier(pg_schema, "items__rejected"))
    ).fetchall()
    assert [r[0] for r in losers] == [2, 4, 5]  # CSV lines of (5,a), (200,c), (5,d)
    assert {r[1] for r in losers} == {"duplicate_key"} and {r[2] for r in losers} == {"id"}
    assert losers[0][3] == 'key {"id": 5} appears 3 times in the load; line 3 was kept'
    assert '"name": "a"' in str(losers[0][4])


def test_duplicate_keys_fail_the_load_when_asked(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """With on_duplicate: fail, a repeated key fails the load, naming lines, and changes nothing."""
    merge_file(tmp_path, OLD, pg_schema, database_url, "old")
    new = pl.DataFrame({"id": [7, 8, 7], "name": ["x", "y", "z"], "amount": [0, 0, 0]})
    with pytest.raises(DuplicateKeys, match=r'key \{"id": 7\} at line 2, also at line 4'):
        merge_file(tmp_path, new, pg_schema, database_url, "new", merge={"on_duplicate": "fail"})
    assert table_rows(pg_conn, pg_schema, OLD.columns) == frame_rows(OLD)


def test_a_null_key_is_a_bad_row(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """A row without its key is quarantined (not_null), and counts against max_bad_rows."""
    merge_file(tmp_path, OLD, pg_schema, database_url, "old")
    new = pl.DataFrame({"id": [1, None, 300], "name": ["x", "y", "z"], "amount": [0, 0, 0]})
    with pytest.raises(BadRowsOverLimit, match="line 3"):
        merge_file(tmp_path, new, pg_schema, database_url, "new")
    assert table_rows(pg_conn, pg_schema, OLD.columns) == frame_rows(OLD)
    report = merge_file(
        tmp_path, new, pg_schema, database_url, "new2", validation_data={"max_bad_rows": 1}
    )
    assert report.rows_rejected == 1 and report.merge["inserted"] == 1
    assert report.merge["updated"] == 1
    rules = pg_conn.execute(
        sql.SQL("select distinct column_name, row_number from {}").format(
            sql.Identifier(pg_schema, "items__rejected")
        )
    ).fetchall()
    assert rules == [("id", 3)]


def test_hard_delete_removes_the_flagged_keys(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """Rows flagged in hard_delete delete their key; a flag on an unknown key deletes nothing."""
    old = OLD.with_columns(pl.lit(False).alias("gone"))
    settings = {"merge": {"hard_delete": "gone"}, "schema_config": {"data_type": {"gone": "bool"}}}
    merge_file(tmp_path, old, pg_schema, database_url, "old", **settings)
    new = pl.DataFrame(
        {"id": [3, 4, 500, 6], "name": ["x", "y", "z", "w"], "amount": [0, 0, 0, 0]}
    ).with_columns(pl.Series("gone", [True, True, True, False]))
    report = merge_file(tmp_path, new, pg_schema, database_url, "new", **settings)
    assert report.merge["deleted"] == 2 and report.merge["updated"] == 1
    assert report.merge["inserted"] == 0
    want = pl.concat([old.filter(~pl.col("id").is_in([3, 4, 6])), new.filter(pl.col("id") == 6)])
    assert table_rows(pg_conn, pg_schema, want.columns) == frame_rows(want)


def test_a_table_without_a_unique_index_is_refused_before_loading(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """The message gives the index to create; the table and the ledger's files stay untouched."""
    pg_conn.execute(
        sql.SQL("create table {} (id bigint, name text, amount bigint)").format(
            sql.Identifier(pg_schema, "items")
        )
    )
    pg_conn.execute(
        sql.SQL("insert into {} values (1, 'kept', 1)").format(sql.Identifier(pg_schema, "items"))
    )
    with pytest.raises(MergeKeyMissing, match=r"fix: create unique index on .*items \(\"id\"\)"):
        merge_file(tmp_path, OLD, pg_schema, database_url, "old")
    assert table_rows(pg_conn, pg_schema, ["id", "name", "amount"]) == [(1, "kept", 1)]
    pg_conn.execute(
        sql.SQL("create unique index on {} (id)").format(sql.Identifier(pg_schema, "items"))
    )
    report = merge_file(tmp_path, OLD, pg_schema, database_url, "old2")
    assert report.merge["inserted"] == 99 and report.merge["updated"] == 1


def test_the_same_merge_again_changes_nothing(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """Merging the same file again counts every row unchanged and rewrites none."""
    first = merge_file(tmp_path, OLD, pg_schema, database_url, "old")
    again = merge_file(tmp_path, OLD, pg_schema, database_url, "old", force=True)
    assert again.merge == {
        "inserted": 0,
        "updated": 0,
        "unchanged": 100,
        "deleted": 0,
        "duplicates": 0,
    }
    runs = pg_conn.execute(
        sql.SQL("select distinct _run_id::text from {}").format(sql.Identifier(pg_schema, "items"))
    ).fetchall()
    assert runs == [(_uuid(first.run_id),)]


def test_the_first_merge_leaves_room_on_each_page_for_updates(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """A table the first merge creates has fillfactor 90, so later updates can stay on the page."""
    merge_file(tmp_path, OLD, pg_schema, database_url, "old")
    options = pg_conn.execute(
        "select reloptions from pg_catalog.pg_class where oid = %s::regclass",
        (sql.Identifier(pg_schema, "items").as_string(None),),
    ).fetchone()
    assert options == (["fillfactor=90"],)


def test_composite_keys_and_odd_text(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """Keys of two text columns with quotes, spaces and unicode merge like any other."""
    odd = ["O'Brien", 'say "hi"', "a b", "ünïcødé", "日本", "tab\there", "", "x;drop table y"]
    key_a, key_b = 'Region "A"', "code b"
    old = pl.DataFrame(
        {key_a: odd * 2, key_b: ["b1"] * len(odd) + ["b 2"] * len(odd), "v": list(range(16))}
    )
    settings = {"keys": [key_a, key_b], "table": 'weird "table" ñ'}
    merge_file(tmp_path, old, pg_schema, database_url, "old", **settings)
    new = pl.DataFrame(
        {
            key_a: [*odd[:4], "new'one"],
            key_b: ["b 2", "b 2", "b3", "b1", "b1"],
            "v": [100, 101, 102, 3, 104],
        }
    )
    report = merge_file(tmp_path, new, pg_schema, database_url, "new", **settings)
    assert report.merge["inserted"] == 2 and report.merge["updated"] == 2
    assert report.merge["unchanged"] == 1
    merged = pl.concat([old.join(new, on=[key_a, key_b], how="anti"), new])
    cols = [key_a, key_b, "v"]
    got = table_rows(pg_conn, pg_schema, cols, table='weird "table" ñ', order=cols)
    assert got == frame_rows(merged, cols)


def test_scd2_keeps_history(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """A changed key's version is closed and a new one opened; retire_absent ends missing keys."""
    settings = {"merge": {"strategy": "scd2", "retire_absent": True}}
    first = merge_file(tmp_path, OLD, pg_schema, database_url, "old", **settings)
    new = changes().filter(pl.col("id") <= 15)  # keys 16-100 absent: retired
    second = merge_file(tmp_path, new, pg_schema, database_url, "new", **settings)
    assert second.merge == {
        "inserted": 0,
        "updated": 10,
        "unchanged": 5,
        "deleted": 85,
        "duplicates": 0,
    }
    rows = pg_conn.execute(
        sql.SQL(
            "select id, name, amount, _valid_to is null, _run_id::text from {}"
            " order by id, _valid_from"
        ).format(sql.Identifier(pg_schema, "items"))
    ).fetchall()
    one, two = _uuid(first.run_id), _uuid(second.run_id)
    want = []
    for i, name, amount in OLD.rows():
        if i <= 10:
            want += [(i, name, amount, False, one), (i, name, amount + 1, True, two)]
        else:
            want.append((i, name, amount, i <= 15, one))
    assert [tuple(r) for r in rows] == want
    closed = pg_conn.execute(
        sql.SQL(
            "select count(distinct _valid_to), min(_valid_from) < min(_valid_to) from {}"
        ).format(sql.Identifier(pg_schema, "items"))
    ).fetchone()
    assert closed == (1, True)
    again = merge_file(tmp_path, new, pg_schema, database_url, "new", force=True, **settings)
    assert again.merge["unchanged"] == 15 and again.merge["updated"] == 0


def test_merge_after_drift_with_evolve(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """A new column evolves the table; the merged rows fill it and the others keep NULL."""
    merge_file(tmp_path, OLD, pg_schema, database_url, "old", on_drift="evolve")
    new = changes().with_columns(pl.lit("y").alias("extra"))
    report = merge_file(tmp_path, new, pg_schema, database_url, "new", on_drift="evolve")
    assert report.merge["inserted"] == 10 and report.merge["updated"] == 20
    want = pl.concat([OLD.join(new, on="id", how="anti"), new], how="diagonal")
    cols = ["id", "name", "amount", "extra"]
    assert table_rows(pg_conn, pg_schema, cols) == frame_rows(want.select(cols))


def test_merge_without_evolve_refuses_a_new_column(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """Under on_drift: fail a new column stops the merge with the table unchanged."""
    from ingest.errors import SchemaDrift

    merge_file(tmp_path, OLD, pg_schema, database_url, "old")
    with pytest.raises(SchemaDrift):
        merge_file(
            tmp_path, changes().with_columns(pl.lit(1).alias("x")), pg_schema, database_url, "n"
        )
    assert table_rows(pg_conn, pg_schema, OLD.columns) == frame_rows(OLD)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"primary_key": None}, "merge needs primary_key"),
        ({"primary_key": ["id", "id"]}, "names a column twice"),
        (
            {"if_table_exists": "append", "merge": {"strategy": "upsert"}},
            "apply to if_table_exists: merge",
        ),
        ({"merge": {"strategy": "sideways"}}, "merge.strategy: Input should be"),
        ({"merge": {"hard_delete": "id"}}, "is a primary_key column"),
        ({"merge": {"dedup_sort": {"amount": "up"}}}, "merge.dedup_sort.amount"),
        ({"merge": {"retire_absent": True}}, "applies to strategy: scd2"),
        ({"merge": {"typo": 1}}, "merge.typo: unknown key"),
        (
            {"if_table_exists": "replace", "incremental": {"cursor": "id"}},
            "works with if_table_exists append or merge",
        ),
    ],
)
def test_bad_merge_settings_are_one_line_each(
    tmp_path: Path, source: dict[str, Any], message: str
) -> None:
    """Each wrong keyed setting is named in the config error, before anything runs."""
    data = tmp_path / "x.csv"
    OLD.write_csv(data)
    path = write_config(tmp_path, data, "s", "postgresql://nowhere/x", **source)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"primary_key": ["nope"]}, "primary_key: no column 'nope' in x.csv"),
        ({"merge": {"dedup_sort": {"when": "desc"}}}, "merge.dedup_sort: no column 'when'"),
        ({"merge": {"hard_delete": "name"}}, "'name' of x.csv is String, not boolean"),
    ],
)
def test_merge_columns_the_file_lacks_are_refused(
    tmp_path: Path, database_url: str, source: dict[str, Any], message: str
) -> None:
    """A key, sort or delete column that the file does not have is a config error, not a crash."""
    data = tmp_path / "x.csv"
    OLD.write_csv(data)
    path = write_config(tmp_path, data, "s", database_url, **source)
    with pytest.raises(ConfigError, match=message):
        run_source(load_config(path), progress=False)


def test_dbt_sources_test_the_primary_key(
    tmp_path: Path, database_url: str, pg_schema: str
) -> None:
    """The generated source has not_null and unique on a key, unique over a composite one."""
    frame = OLD.with_columns(pl.col("id").alias("id2"))
    merge_file(tmp_path, frame, pg_schema, database_url, "one")
    text = (tmp_path / "dbt_scratch/models/staging/items/_items__sources.yml").read_text()
    table = yaml.safe_load(text)["sources"][0]["tables"][0]
    tests = {c["name"]: c.get("data_tests") for c in table["columns"]}
    assert tests["id"] == ["not_null", "unique"] and tests["name"] is None
    merge_file(
        tmp_path,
        frame,
        pg_schema,
        database_url,
        "two",
        keys=["id", "id2"],
        table="pair",
        source_name="pair",
    )
    text = (tmp_path / "dbt_scratch/models/staging/pair/_pair__sources.yml").read_text()
    pair = next(t for t in yaml.safe_load(text)["sources"][0]["tables"] if t["name"] == "pair")
    assert pair["data_tests"] == [
        {
            "unique_combination_of_columns": {
                "arguments": {"combination_of_columns": ['"id"', '"id2"']}
            }
        }
    ]
    assert {c["name"]: c.get("data_tests") for c in pair["columns"]}["id2"] == ["not_null"]


def test_scd2_into_a_table_made_elsewhere_needs_a_current_only_unique_index(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """scd2 refuses a table whose key is unique over all versions, and merges once it is not."""
    table = sql.Identifier(pg_schema, "items")
    pg_conn.execute(
        sql.SQL(
            "create table {} (id bigint primary key, name text, amount bigint,"
            " _valid_from timestamptz, _valid_to timestamptz)"
        ).format(table)
    )
    pg_conn.execute(sql.SQL("insert into {} values (1, 'name 1', 1, now(), null)").format(table))
    settings = {"merge": {"strategy": "scd2"}}
    with pytest.raises(MergeKeyMissing, match=r'\("id"\) where "_valid_to" is null'):
        merge_file(tmp_path, OLD.head(3), pg_schema, database_url, "a", **settings)
    pg_conn.execute(sql.SQL("alter table {} drop constraint items_pkey").format(table))
    pg_conn.execute(sql.SQL("create unique index on {} (id) where _valid_to is null").format(table))
    report = merge_file(tmp_path, OLD.head(3), pg_schema, database_url, "b", **settings)
    assert report.merge["inserted"] == 2 and report.merge["updated"] == 1
    versions = pg_conn.execute(
        sql.SQL("select id, amount, _valid_to is null from {} order by id, _valid_from").format(
            table
        )
    ).fetchall()
    assert versions == [(1, 1, False), (1, 10, True), (2, 20, True), (3, 30, True)]


def test_a_table_with_a_required_column_the_file_lacks_is_refused(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """A NOT NULL column without a default that the file lacks stops the merge up front."""
    from ingest.errors import RequiredColumnMissing

    pg_conn.execute(
        sql.SQL(
            "create table {} (id bigint primary key, name text, amount bigint, owner text not null)"
        ).format(sql.Identifier(pg_schema, "items"))
    )
    with pytest.raises(RequiredColumnMissing, match='"owner"'):  # drift: warn lets it through
        merge_file(tmp_path, OLD, pg_schema, database_url, "a", on_drift="warn")
