"""The merge benchmark's inputs: lineitem with a delete flag, a change file, and its result.

From lineitem (key `l_orderkey, l_linenumber`) a hash of the key picks 10% of the rows to
change (`l_quantity` + 1, a new `l_comment`), 5% whose copies become new keys (`l_orderkey`
moved past the largest one), and 1% to delete (`l_deleted` true). The change file holds those
16%; the expected table is the base with the changes applied, computed here with polars, apart
from the SQL under test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

KEY = ("l_orderkey", "l_linenumber")
FLAG = "l_deleted"


@dataclass(frozen=True)
class MergeFiles:
    """The files of one merge benchmark."""

    base: Path  # lineitem with `l_deleted` false everywhere
    changes: Path  # 10% changed, 5% new, 1% deleted
    expected: Path  # base after the merge of changes: the full replace's input too
    base_rows: int
    change_rows: int


def _bucket() -> pl.Expr:
    return (pl.col("l_orderkey") * 7 + pl.col("l_linenumber")) % 100


def merge_files(lineitem: Path, folder: Path) -> MergeFiles:
    """Write (once) the base, change and expected Parquet files beside each other."""
    folder.mkdir(parents=True, exist_ok=True)
    base, changes, expected = (folder / f"{n}.parquet" for n in ("base", "changes", "expected"))
    if not expected.exists():
        frame = pl.read_parquet(lineitem).with_columns(pl.lit(False).alias(FLAG))
        frame.write_parquet(base, row_group_size=250_000)
        top = int(frame["l_orderkey"].max())  # type: ignore[arg-type]
        bucket = _bucket()
        changed = frame.filter(bucket < 10).with_columns(
            (pl.col("l_quantity") + 1).cast(frame.schema["l_quantity"]),
            pl.lit("changed by the merge benchmark").alias("l_comment"),
        )
        new = frame.filter((bucket >= 10) & (bucket < 15)).with_columns(pl.col("l_orderkey") + top)
        deleted = frame.filter(bucket == 15).with_columns(pl.lit(True).alias(FLAG))
        pl.concat([changed, new, deleted]).sample(fraction=1.0, shuffle=True, seed=7).write_parquet(
            changes, row_group_size=250_000
        )
        kept = frame.filter(bucket >= 10).filter(bucket != 15)
        pl.concat([changed, kept, new]).write_parquet(expected, row_group_size=250_000)
    return MergeFiles(
        base,
        changes,
        expected,
        pl.scan_parquet(base).select(pl.len()).collect().item(),
        pl.scan_parquet(changes).select(pl.len()).collect().item(),
    )
