"""What the remote-input tests load and how they check it: rows, configs, the table's values."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
from psycopg import sql

from tests.stages.remote_servers import BUCKET, KEY_ID, SECRET, S3Server


def frame(rows: int, seed: int = 0) -> pl.DataFrame:
    """Rows with an integer key, a decimal-ish float, text with commas and quotes, a date, nulls."""
    ids = range(seed * 1_000_000, seed * 1_000_000 + rows)
    return pl.DataFrame(
        {
            "id": list(ids),
            "amount": [round(i * 1.25, 2) for i in ids],
            "note": [None if i % 7 == 0 else f'item "{i}", ok' for i in ids],
            "day": [date(2024, 1, 1 + i % 28) for i in ids],
        }
    )


def upload(server: S3Server, data: pl.DataFrame, key: str, tmp_path: Path, groups: int = 3) -> str:
    """Write `data` as Parquet (in `groups` row groups) or CSV by the key's suffix; upload it."""
    local = tmp_path / key.replace("/", "_")
    if key.endswith(".parquet"):
        data.write_parquet(local, row_group_size=max(data.height // groups, 1))
    else:
        data.write_csv(local)
    server.client().upload_file(str(local), BUCKET, key)
    return f"s3://{BUCKET}/{key}"


def config(
    tmp_path: Path,
    url: str,
    pg_schema: str,
    database_url: str,
    *,
    endpoint: str | None,
    table: str = "remote",
    if_exists: str = "replace",
    name: str = "remote",
    **storage: Any,
) -> Path:
    """A one-source config reading `url`, with credentials in storage_options (the secret too)."""
    options: dict[str, Any] = {"retries": 1, "timeout_s": 5, **storage}
    if endpoint:
        options |= {
            "endpoint_url": endpoint,
            "region": "us-east-1",
            "access_key_id": KEY_ID,
            "secret_access_key": SECRET,
        }
    path = tmp_path / f"{name}.yml"
    path.write_text(
        json.dumps(
            {
                "database": {
                    "url": database_url,
                    "schema": pg_schema,
                    "metadata_schema": pg_schema,
                },
                "sources": {
                    name: {
                        "input_path": url,
                        "table_name": table,
                        "if_table_exists": if_exists,
                        "storage_options": options,
                    }
                },
            }
        )
    )
    return path


def table_rows(database_url: str, schema: str, table: str = "remote") -> pl.DataFrame:
    """The loaded table without the lineage columns, ordered by id."""
    with psycopg.connect(database_url) as conn:
        cursor = conn.execute(
            sql.SQL("select id, amount, note, day from {} order by id").format(
                sql.Identifier(schema, table)
            )
        )
        names = [c.name for c in cursor.description or ()]
        return pl.DataFrame(cursor.fetchall(), schema=names, orient="row")


def text_of(database_url: str, schema: str) -> str:
    """Everything the ledger holds, as one string."""
    with psycopg.connect(database_url) as conn:
        runs = conn.execute(sql.SQL("select r::text from {}.runs r").format(sql.Identifier(schema)))
        files = conn.execute(
            sql.SQL("select f::text from {}.files f").format(sql.Identifier(schema))
        )
        return "\n".join(str(r[0]) for r in [*runs.fetchall(), *files.fetchall()])


def same_values(loaded: pl.DataFrame, source: pl.DataFrame) -> None:
    assert loaded.height == source.height
    assert loaded["id"].to_list() == source["id"].to_list()
    assert [float(x) for x in loaded["amount"]] == source["amount"].to_list()
    assert loaded["note"].to_list() == source["note"].to_list()
    # CSV dates stay text unless schema_config.date_format says otherwise
    assert [str(d) for d in loaded["day"]] == [str(d) for d in source["day"]]
    assert loaded["note"].null_count() == source["note"].null_count()
