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

from ingest import load_config, run_source
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
                "sources": {"items": entry},
            },
            allow_unicode=True,
        ),
        encoding="utf-8",
    )
    return path


def merge_file(tmp_path: Path, frame: pl.DataFrame, schema: str, url: str, name: str, **kw: Any):  # type: ignore[no-untyped-def]
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
    conn: Conn, schema: str, columns: list[str], table: str = "items", order: list[str] | None = None
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
