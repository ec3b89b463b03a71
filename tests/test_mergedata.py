"""The merge benchmark's inputs: the expected table is the base with the change file applied."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl

from bench.mergedata import merge_files


def test_expected_is_the_base_merged_with_the_changes(tmp_path: Path) -> None:
    """DuckDB, merging the change file into the base by key, gets the expected file's rows."""
    n = 2_000
    pl.DataFrame(
        {
            "l_orderkey": list(range(1, n + 1)),  # the key hash then takes each bucket alike
            "l_linenumber": [1] * n,
            "l_quantity": pl.Series([Decimal("1.00")] * n, dtype=pl.Decimal(15, 2)),
            "l_comment": ["c"] * n,
        }
    ).write_parquet(tmp_path / "lineitem.parquet")
    files = merge_files(tmp_path / "lineitem.parquet", tmp_path / "m")
    changes = pl.read_parquet(files.changes)
    assert files.base_rows == n and files.change_rows == changes.height
    shares = changes.group_by(
        pl.when(pl.col("l_deleted"))
        .then(pl.lit("deleted"))
        .when(pl.col("l_orderkey") > n)
        .then(pl.lit("new"))
        .otherwise(pl.lit("changed"))
        .alias("kind")
    ).len()
    got = dict(shares.iter_rows())
    assert got == {"changed": n // 10, "new": n // 20, "deleted": n // 100}
    merged = (
        duckdb.connect()
        .execute(
            "with b as (select * from read_parquet(?)), c as (select * from read_parquet(?))"
            " select * from b anti join c using (l_orderkey, l_linenumber)"
            " union all select * from c where not l_deleted"
            " order by l_orderkey, l_linenumber",
            [str(files.base), str(files.changes)],
        )
        .pl()
    )
    want = pl.read_parquet(files.expected).sort("l_orderkey", "l_linenumber")
    assert merged.rows() == want.rows()
    assert changes.schema == want.schema  # no widened types: the merge meets no drift
