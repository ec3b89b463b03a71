"""Validate batches with a Pandera schema built from the planned column types."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandera.errors
import pandera.polars as pa
import polars as pl

from ingest.errors import ValidationFailed

_MAX_SHOWN = 10


@dataclass(frozen=True)
class ValidationStats:
    """Which checks ran, on how many rows."""

    schema_checked_rows: int
    data_checked_rows: int
    sample_size: float


def build_schema(columns: dict[str, pl.DataType]) -> pa.DataFrameSchema:
    """A strict Pandera schema: exactly these columns, in this order, with these types."""
    return pa.DataFrameSchema(
        {name: pa.Column(dtype, nullable=True) for name, dtype in columns.items()},
        strict=True,
        ordered=True,
    )


def validate_batch(
    path: Path, schema: pa.DataFrameSchema, batch: pl.DataFrame, sample_size: float, seed: int
) -> tuple[int, int]:
    """Check a batch's structure in full and its values on a sample.

    Returns:
        Rows checked for structure and rows checked for values.

    Raises:
        ValidationFailed: with up to ten failure cases, naming column, check and row.
    """
    rows = batch.height
    sample = (
        batch
        if sample_size >= 1
        else batch.sample(n=max(int(rows * sample_size), min(rows, 1)), seed=seed)
    )
    try:
        schema.validate(sample, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        shown = cases.head(_MAX_SHOWN).select("column", "check", "failure_case", "index")
        lines = [
            f"  column {r['column']!r}: {r['check']} failed for value {r['failure_case']!r}"
            f" (row {r['index']} of the sample)"
            for r in shown.iter_rows(named=True)
        ]
        raise ValidationFailed(path, cases.height, "\n".join(lines)) from None
    return rows, sample.height
