"""What profiling learns about a file: rows, bytes, and each column's type and in-memory width."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ingest.stages.remote import Location


@dataclass(frozen=True)
class ColumnProfile:
    """One column: its type and the bytes it takes in memory per row."""

    name: str
    dtype: pl.DataType
    bytes_per_row: float
    footer_bytes: int | None = None  # Parquet: uncompressed size recorded in the footer


@dataclass(frozen=True)
class FileProfile:
    """What a load of one file will handle, measured from its metadata and a sample."""

    path: Location
    format: str
    file_bytes: int
    rows: int
    rows_exact: bool
    columns: tuple[ColumnProfile, ...]
    sample: pl.DataFrame = field(compare=False, repr=False)
    row_groups: int = 1
    compression: str = "none"  # of the stored file: gzip or zstd text is read as one stream

    @property
    def sample_rows(self) -> int:
        """Rows in the sample the widths and types came from."""
        return self.sample.height

    @property
    def row_bytes(self) -> float:
        """In-memory bytes of one row across all columns."""
        return sum(c.bytes_per_row for c in self.columns)

    @property
    def frame_bytes(self) -> int:
        """In-memory bytes of the whole file as one frame."""
        return int(self.row_bytes * self.rows)

    @property
    def schema(self) -> dict[str, pl.DataType]:
        """Column name to type, in file order."""
        return {c.name: c.dtype for c in self.columns}


def widths(sample: pl.DataFrame) -> dict[str, float]:
    """Each column's in-memory bytes per row in `sample`."""
    rows = max(sample.height, 1)
    return {name: sample[name].estimated_size() / rows for name in sample.columns}


def fixed_width(dtype: pl.DataType) -> float:
    """Bytes per value of a fixed-width type; 16 for the others."""
    try:
        return float(dtype.to_physical().size)  # type: ignore[attr-defined]
    except AttributeError:
        return 16.0
