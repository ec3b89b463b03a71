"""Benchmark inputs: TPC-H lineitem (tpchgen-cli) or a synthetic 5-column table, as Parquet and CSV.

Both are cached under the bench folder and reused when present. Every file is written under a
temporary name and renamed when complete, so an interrupted run never leaves a file that looks
finished. The synthetic table is generated batch by batch (one Parquet row group per batch), so
memory stays flat whatever the row count.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ingest.errors import IngestError

Say = Callable[[str], None]

SEED = 20240611
BATCH_ROWS = 1_000_000  # ~100 MB of Arrow data per batch, and one Parquet row group each

LINEITEM_COLUMNS: tuple[tuple[str, str], ...] = (
    ("l_orderkey", "bigint"),
    ("l_partkey", "bigint"),
    ("l_suppkey", "bigint"),
    ("l_linenumber", "integer"),
    ("l_quantity", "numeric(15,2)"),
    ("l_extendedprice", "numeric(15,2)"),
    ("l_discount", "numeric(15,2)"),
    ("l_tax", "numeric(15,2)"),
    ("l_returnflag", "text"),
    ("l_linestatus", "text"),
    ("l_shipdate", "date"),
    ("l_commitdate", "date"),
    ("l_receiptdate", "date"),
    ("l_shipinstruct", "text"),
    ("l_shipmode", "text"),
    ("l_comment", "text"),
)
SYNTHETIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "bigint"),
    ("name", "text"),
    ("age", "integer"),
    ("salary", "double precision"),
    ("department", "text"),
)
SYNTHETIC_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("age", pa.int32()),
        ("salary", pa.float64()),
        ("department", pa.string()),
    ]
)
FIRST = (
    "Ada Alan Anna Ben Carla Chen Dana Omar Eva Farah Gita Hugo Ines Ivan Jana Kofi Lena Luis "
    "Maya Nils Olga Pia Ravi Rosa Sami Tara Uma Vera Wen Yuki Zoe Amir"
).split()
LAST = (
    "Smith Garcia Kim Nguyen Ivanova Okafor Rossi Novak Silva Khan Muller Tanaka Cohen Dubois "
    "Larsen Moreau Patel Lopez Haddad Berg Costa Mensah Weber Yilmaz Sato Ortiz Popescu Hale "
    "Kowalski Mbeki Fischer Lindqvist"
).split()
DEPARTMENTS = (
    "Engineering",
    "Sales",
    "Marketing",
    "Finance",
    "Operations",
    "Support",
    "Legal",
    "HR",
)
DEPARTMENT_WEIGHTS = np.array([0.30, 0.20, 0.10, 0.10, 0.12, 0.12, 0.03, 0.03])


@dataclass(frozen=True)
class Dataset:
    """One benchmark input: the same rows as Parquet and as CSV (with a header), and its DDL."""

    name: str
    rows: int
    parquet: Path
    csv: Path
    columns: tuple[tuple[str, str], ...]

    @property
    def parquet_bytes(self) -> int:
        """Size of the Parquet file."""
        return self.parquet.stat().st_size

    @property
    def csv_bytes(self) -> int:
        """Size of the CSV file."""
        return self.csv.stat().st_size


def tpchgen() -> str:
    """The `tpchgen-cli` next to this Python (the venv's console script), else the one on PATH."""
    beside = Path(sys.executable).parent / "tpchgen-cli"
    found = str(beside) if beside.exists() else shutil.which("tpchgen-cli")
    if found is None:
        raise IngestError("tpchgen-cli is not installed; `pip install tpchgen-cli` provides it")
    return found


def lineitem(folder: Path, scale: float, *, log: Say | None = None) -> Dataset:
    """TPC-H lineitem at scale factor `scale` (SF1 = 6,001,215 rows), generated once and cached."""
    target = folder / f"lineitem-sf{scale:g}"
    target.mkdir(parents=True, exist_ok=True)
    for fmt in ("parquet", "csv"):
        final = target / f"lineitem.{fmt}"
        if final.exists():
            continue
        if log:
            log(f"generating TPC-H lineitem SF{scale:g} as {fmt} with tpchgen-cli")
        with tempfile.TemporaryDirectory(dir=target, prefix=".gen-") as tmp:
            # tpchgen's CSV has a header line and RFC 4180 quoting: psql and polars both read it.
            argv = [
                tpchgen(),
                fmt,
                "-s",
                f"{scale:g}",
                "-T",
                "lineitem",
                "-o",
                tmp,
                "--no-progress",
                "--quiet",
            ]
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise IngestError(f"tpchgen-cli failed ({done.returncode}): {done.stderr[-500:]}")
            os.replace(Path(tmp) / f"lineitem.{fmt}", final)
    rows = pq.read_metadata(target / "lineitem.parquet").num_rows
    return Dataset(
        f"lineitem-sf{scale:g}",
        rows,
        target / "lineitem.parquet",
        target / "lineitem.csv",
        LINEITEM_COLUMNS,
    )


def synthetic_batch(start: int, count: int, batch_index: int, seed: int = SEED) -> pa.Table:
    """Rows `start .. start+count` of the synthetic table; the same arguments give the same rows."""
    rng = np.random.default_rng([seed, batch_index])
    first = pa.array(FIRST)
    last = pa.array(LAST)
    names = pc.binary_join_element_wise(
        first.take(pa.array(rng.integers(0, len(FIRST), count))),
        last.take(pa.array(rng.integers(0, len(LAST), count))),
        " ",
    )
    salary = np.round(np.clip(rng.normal(65_000, 18_000, count), 22_000, 250_000), 2)
    department = pa.array(DEPARTMENTS).take(
        pa.array(rng.choice(len(DEPARTMENTS), count, p=DEPARTMENT_WEIGHTS))
    )
    return pa.table(
        {
            "id": pa.array(np.arange(start, start + count, dtype=np.int64)),
            "name": names,
            "age": pa.array(rng.integers(18, 71, count, dtype=np.int32)),
            "salary": pa.array(salary),
            "department": department,
        },
        schema=SYNTHETIC_SCHEMA,
    )


def synthetic_batches(rows: int, batch_rows: int = BATCH_ROWS) -> Iterator[pa.Table]:
    """The synthetic table as consecutive batches of at most `batch_rows` rows."""
    for index, start in enumerate(range(0, rows, batch_rows)):
        yield synthetic_batch(start, min(batch_rows, rows - start), index)


def write_synthetic(parquet: Path, csv: Path, rows: int, batch_rows: int = BATCH_ROWS) -> None:
    """Write `rows` synthetic rows to both files in one pass, a batch (and row group) at a time."""
    parquet_tmp = parquet.with_name(f".{parquet.name}.partial")
    csv_tmp = csv.with_name(f".{csv.name}.partial")
    with (
        pq.ParquetWriter(parquet_tmp, SYNTHETIC_SCHEMA, compression="snappy") as pw,
        pacsv.CSVWriter(csv_tmp, SYNTHETIC_SCHEMA) as cw,
    ):
        for batch in synthetic_batches(rows, batch_rows):
            pw.write_table(batch, row_group_size=batch_rows)
            cw.write_table(batch)
    os.replace(parquet_tmp, parquet)
    os.replace(csv_tmp, csv)


def synthetic(
    folder: Path, rows: int, *, batch_rows: int = BATCH_ROWS, log: Say | None = None
) -> Dataset:
    """The synthetic table (id, name, age, salary, department), generated once and cached."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    target = folder / f"synthetic-{rows}"
    target.mkdir(parents=True, exist_ok=True)
    parquet, csv = target / "people.parquet", target / "people.csv"
    if not (parquet.exists() and csv.exists()):
        if log:
            log(f"generating {rows:,} synthetic rows in batches of {batch_rows:,}")
        write_synthetic(parquet, csv, rows, batch_rows)
    return Dataset(f"synthetic-{rows}", rows, parquet, csv, SYNTHETIC_COLUMNS)
