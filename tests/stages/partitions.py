"""A test helper: a whole file as the one partition a reader is given (ingest plans more)."""

from __future__ import annotations

import sys
from pathlib import Path

from ingest.stages.partition import Partition, plan_partitions


def whole_file(path: Path, fmt: str, has_header: bool = True) -> Partition:
    """The file as one partition: a CSV's whole body (not scanned), every Parquet row group."""
    (part,) = plan_partitions(
        [path], fmt, has_header, csv_bytes=sys.maxsize, parquet_rows=sys.maxsize
    )
    return part
