"""Incremental cursors on a real PostgreSQL: rows at or below the mark are skipped and counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest
import yaml
from psycopg import sql

from ingest import load_config, run_source
from ingest.errors import BadRowsOverLimit, ConfigError

Conn = psycopg.Connection[tuple[object, ...]]
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def rows(ids: range, hours: range | None = None, name: str = "v") -> pl.DataFrame:
    """Rows keyed by id whose cursor `updated_at` is T0 plus the given hours (default: the id)."""
    hours = hours or ids
    return pl.DataFrame(
        {
            "id": list(ids),
            "name": [f"{name}{i}" for i in ids],
            "updated_at": [T0 + timedelta(hours=h) for h in hours],
        }
    )


def config(tmp_path: Path, data: str, schema: str, url: str, **source: Any) -> Path:
    entry = {"input_path": data, "table_name": "events", "incremental": {"cursor": "updated_at"}}
    path = tmp_path / "inc.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "database": {"schema": schema, "metadata_schema": schema, "url": url},
                "sources": {"events": entry | source},
            }
        )
    )
    return path


def mark(conn: Conn, schema: str) -> str | None:
    row = conn.execute(
        sql.SQL("select high_water from {}").format(sql.Identifier(schema, "cursors"))
    ).fetchone()
    return None if row is None else str(row[0])


def count(conn: Conn, schema: str) -> int:
    row = conn.execute(
        sql.SQL("select count(*) from {}").format(sql.Identifier(schema, "events"))
    ).fetchone()
    return int(str(row[0])) if row else -1


@pytest.mark.parametrize("if_exists", ["append", "merge"])
def test_rows_at_or_below_the_mark_are_skipped(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn, if_exists: str
) -> None:
    """The second file's rows up to the first's largest cursor are skipped, and counted."""
    settings: dict[str, Any] = {"if_table_exists": if_exists}
    if if_exists == "merge":
        settings["primary_key"] = ["id"]
    rows(range(1, 101)).write_parquet(tmp_path / "a.parquet")
    first = run_source(
        load_config(
            config(tmp_path, str(tmp_path / "a.parquet"), pg_schema, database_url, **settings)
        ),
        progress=False,
    )
    assert (first.rows_skipped, first.rows_loaded) == (0, 100)
    assert mark(pg_conn, pg_schema) == "2024-01-05 04:00:00+00"
    # ids 51-150 at hours 41-140: hours up to 100 (ids 51-110) are at or below the mark.
    rows(range(51, 151), range(41, 141), "new").write_parquet(tmp_path / "b.parquet")
    second = run_source(
        load_config(
            config(tmp_path, str(tmp_path / "b.parquet"), pg_schema, database_url, **settings)
        ),
        progress=False,
    )
    assert (second.rows_skipped, second.rows_loaded) == (60, 40)
    assert count(pg_conn, pg_schema) == 140
    assert mark(pg_conn, pg_schema) == "2024-01-06 20:00:00+00"
    ledger = pg_conn.execute(
        sql.SQL("select rows_skipped from {} where run_id = %s").format(
            sql.Identifier(pg_schema, "runs")
        ),
        (second.run_id,),
    ).fetchone()
    assert ledger == (60,)


def test_a_glob_merges_file_by_file_past_the_mark(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """With a glob, each new file merges only rows newer than what the files before brought."""
    folder = tmp_path / "in"
    folder.mkdir()
    rows(range(1, 11)).write_csv(folder / "1.csv")
    rows(range(5, 16), name="second").write_csv(folder / "2.csv")  # hours 5-10 skipped
    path = config(
        tmp_path,
        str(folder / "*.csv"),
        pg_schema,
        database_url,
        if_table_exists="merge",
        primary_key=["id"],
    )
    report = run_source(load_config(path), progress=False)
    assert report.rows_skipped == 6 and report.merge["inserted"] == 15
    names = pg_conn.execute(
        sql.SQL("select name from {} where id in (5, 11) order by id").format(
            sql.Identifier(pg_schema, "events")
        )
    ).fetchall()
    assert names == [("v5",), ("second11",)]
    rows(range(12, 21), name="third").write_csv(folder / "3.csv")
    again = run_source(load_config(path), progress=False)
    assert again.rows_skipped == 4 and again.merge["inserted"] == 5  # 12-15 already in


def test_a_failed_run_leaves_the_mark(
    tmp_path: Path, database_url: str, pg_schema: str, pg_conn: Conn
) -> None:
    """The mark moves with the commit only: a run that fails keeps the old one."""
    rows(range(1, 11)).write_parquet(tmp_path / "a.parquet")
    path = config(
        tmp_path, str(tmp_path / "a.parquet"), pg_schema, database_url, if_table_exists="append"
    )
    run_source(load_config(path), progress=False)
    bad = rows(range(11, 21)).with_columns(pl.col("id").cast(pl.Int64))
    bad.write_parquet(tmp_path / "a.parquet")
    strict = config(
        tmp_path,
        str(tmp_path / "a.parquet"),
        pg_schema,
        database_url,
        if_table_exists="append",
        validation_data={"checks": {"id": {"lt": 15}}},
    )
    with pytest.raises(BadRowsOverLimit):
        run_source(load_config(strict), progress=False)
    assert mark(pg_conn, pg_schema) == "2024-01-01 10:00:00+00"


def test_a_cursor_the_file_lacks_is_a_config_error(tmp_path: Path, database_url: str) -> None:
    """Naming a cursor column the file does not have fails before loading, naming it."""
    rows(range(1, 3)).drop("updated_at").write_parquet(tmp_path / "a.parquet")
    path = config(
        tmp_path, str(tmp_path / "a.parquet"), "s", database_url, if_table_exists="append"
    )
    with pytest.raises(
        ConfigError, match=r"incremental.cursor: no column 'updated_at' in a\.parquet"
    ):
        run_source(load_config(path), progress=False)
