"""Open a file as a lazy frame and hand it out in batches the way the plan says."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl

from ingest.config import CsvOptions
from ingest.plan import Plan


def scan(
    path: Path, fmt: str, csv: CsvOptions, schema: dict[str, pl.DataType] | None = None
) -> pl.LazyFrame:
    """A lazy frame over the file; for CSV, `schema` fixes the column types found by profiling."""
    if fmt == "parquet":
        return pl.scan_parquet(path)
    return pl.scan_csv(
        path,
        separator=csv.separator,
        has_header=csv.has_header,
        schema_overrides=schema,
        null_values=csv.null_values or None,
        encoding=csv.encoding,
        infer_schema_length=10_000,
    )


def batches(frame: pl.LazyFrame, plan: Plan) -> Iterator[pl.DataFrame]:
    """Frames of about `plan.batch_rows` rows, in file order.

    eager collects the whole file once and slices it; lazy and streaming let polars' streaming
    engine produce the batches, so only the batches in flight are in memory.
    """
    if plan.strategy == "eager":
        whole = frame.collect()
        for offset in range(0, whole.height, plan.batch_rows):
            yield whole.slice(offset, plan.batch_rows)
        return
    yield from frame.collect_batches(chunk_size=plan.batch_rows, maintain_order=True)
