"""A deterministic employees data set for the demo and the tests, written as Parquet and CSV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

DEPARTMENTS = (
    "Engineering", "Sales", "Marketing", "Finance", "HR", "Operations", "Support", "Legal",
)  # fmt: skip
_FIRST = (
    "Ana", "Bruno", "Carla", "Diego", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jon",
    "Kenji", "Lucia", "Mateo", "Nora", "Omar", "Paula", "Quinn", "Rosa", "Sven", "Tara",
)  # fmt: skip
_LAST = (
    "Garcia", "Smith", "Novak", "Khan", "Rossi", "Silva", "Müller", "O'Brien", "Tanaka",
    "Dubois", "Kowalski", "Haddad", "Jensen", "Lopez", "Nguyen", "Okafor", "Petrov", "Quispe",
    "Weiss", "Zhou",
)  # fmt: skip
_SALARY_BASE = (95_000, 70_000, 65_000, 80_000, 60_000, 58_000, 48_000, 90_000)


@dataclass(frozen=True)
class DemoFiles:
    """The demo data set on disk."""

    parquet: Path
    csv: Path
    rows: int


def employees(rows: int, seed: int = 7, start_id: int = 1) -> pl.DataFrame:
    """`rows` employees; the same seed and start always give the same frame."""
    rng = np.random.default_rng([seed, start_id])
    first = rng.integers(0, len(_FIRST), rows)
    last = rng.integers(0, len(_LAST), rows)
    dept = rng.integers(0, len(DEPARTMENTS), rows)
    ids = np.arange(start_id, start_id + rows, dtype=np.int64)
    base = np.asarray(_SALARY_BASE, dtype=np.float64)[dept]
    salary = np.round(base * rng.lognormal(0.0, 0.25, rows), 2)
    hire_days = rng.integers(0, 365 * 25, rows)  # 2000-01-01 .. ~2024
    login_seconds = rng.integers(0, 86_400 * 365 * 2, rows)
    frame = pl.DataFrame(
        {
            "Employee_ID": ids,
            "_first": first.astype(np.uint32),
            "_last": last.astype(np.uint32),
            "Age": rng.integers(18, 68, rows).astype(np.int32),
            "Salary": salary,
            "_dept": dept.astype(np.uint32),
            "_hire": hire_days,
            "_login": login_seconds,
            "Is_Active": rng.random(rows) < 0.9,
        }
    )

    def pick(names: tuple[str, ...], column: str) -> pl.Expr:
        return pl.lit(pl.Series(names)).gather(pl.col(column))

    return frame.select(
        "Employee_ID",
        pick(_FIRST, "_first").alias("First_Name"),
        pick(_LAST, "_last").alias("Last_Name"),
        pl.concat_str(
            pick(_FIRST, "_first").str.to_lowercase(),
            pl.lit("."),
            pl.col("Employee_ID").cast(pl.String),
            pl.lit("@example.com"),
        ).alias("Email"),
        "Age",
        "Salary",
        pick(DEPARTMENTS, "_dept").alias("Department"),
        (pl.date(2000, 1, 1) + pl.duration(days=pl.col("_hire"))).alias("Hire_Date"),
        (pl.datetime(2023, 1, 1) + pl.duration(seconds=pl.col("_login"))).alias("Last_Login"),
        "Is_Active",
    )


def write_demo(directory: Path, rows: int = 1_000_000, seed: int = 7) -> DemoFiles:
    """Write `employees.parquet` and `employees.csv` unless the same rows are already there."""
    directory.mkdir(parents=True, exist_ok=True)
    parquet = directory / "employees.parquet"
    csv = directory / "employees.csv"
    stamp = directory / "employees.rows"
    wanted = f"{rows}:{seed}"
    if parquet.exists() and csv.exists() and stamp.exists() and stamp.read_text() == wanted:
        return DemoFiles(parquet, csv, rows)
    frame = employees(rows, seed)
    frame.write_parquet(parquet, row_group_size=250_000)
    frame.write_csv(csv)
    stamp.write_text(wanted)
    return DemoFiles(parquet, csv, rows)
