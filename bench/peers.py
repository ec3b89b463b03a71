"""The tools a user might pick instead of this project, each as a whole child process.

Every peer loads the same rows into a table of the same shape on the same server as the
others: DuckDB's postgres extension and ADBC's PostgreSQL driver from the Parquet file,
pgloader from the CSV. Each returns the argv (and environment) that `bench.run` measures.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from bench.data import Dataset

# pgloader's settings for the comparison (its documented parallel CSV load): four readers and
# writers, two COPYs in flight, the way it was measured on lineitem SF1 (399 s where `\copy`
# took 33 s in the same minutes). At ~12x `\copy`'s time it runs once per benchmark.
PGLOADER_WORKERS = 4
PGLOADER_CONCURRENCY = 2

# Runs in its own Python so that its memory is measured apart from this process (stdlib + duckdb).
DUCKDB = """\
import os, sys, duckdb, duckdb_extensions
parquet, target, extensions = sys.argv[1:4]
con = duckdb.connect(config={"extension_directory": extensions})
duckdb_extensions.import_extension("postgres", con=con)  # installs from the wheel: no download
con.execute("LOAD postgres")
conninfo = os.environ["BENCH_CONNINFO"].replace("'", "''")
con.execute(f"ATTACH '{conninfo}' AS pg (TYPE postgres)")
con.execute(f"CREATE TABLE pg.{target} AS SELECT * FROM read_parquet(?)", [parquet])
"""

# The route polars' `write_database(engine="adbc")` takes: the whole file as one Arrow table,
# handed to the driver's bulk ingest (binary COPY) in one transaction that creates the table.
ADBC = """\
import os, sys
import pyarrow as pa, pyarrow.parquet as pq
import adbc_driver_postgresql.dbapi as dbapi
parquet, schema, table = sys.argv[1:4]
data = pq.read_table(parquet)
# the driver has no string_view (tpchgen writes it): plain strings hold the same values
plain = [
    pa.field(f.name, pa.string() if pa.types.is_string_view(f.type) else f.type)
    for f in data.schema
]
data = data.cast(pa.schema(plain))
with dbapi.connect(os.environ["BENCH_URI"]) as conn, conn.cursor() as cur:
    cur.adbc_ingest(table, data, mode="create", db_schema_name=schema)
    conn.commit()
"""


def duckdb_argv(data: Dataset, target: str, extensions: Path) -> list[str]:
    """DuckDB: `CREATE TABLE pg.<target> AS SELECT * FROM read_parquet(...)`."""
    return [sys.executable, "-c", DUCKDB, str(data.parquet), target, str(extensions)]


def adbc_argv(data: Dataset, schema: str, table: str) -> list[str]:
    """ADBC: `adbc_ingest` of the Parquet file read whole as an Arrow table."""
    return [sys.executable, "-c", ADBC, str(data.parquet), schema, table]


def pgloader_binary() -> str | None:
    """The `pgloader` on PATH (Debian's package), or None when it is not installed."""
    return shutil.which("pgloader")


def pgloader_script(data: Dataset, url: str, schema: str, table: str, ddl: str, work: Path) -> Path:
    """Write pgloader's command file for loading the CSV into `schema.table`; return its path.

    The table is created before the load with the benchmark's DDL, as `\\copy`'s is, so the
    types are the same and not pgloader's guesses.
    """
    parts = conninfo_to_dict(url)
    host, port = parts.get("host", "127.0.0.1"), parts.get("port", "5432")
    user, dbname = parts.get("user", "postgres"), parts.get("dbname", "postgres")
    names = ", ".join(name for name, _ in data.columns)
    target = sql.Identifier(schema, table).as_string(None)
    script = work / "pgloader" / f"{table}.load"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(
        f"""LOAD CSV
     FROM '{data.csv}' ({names})
     INTO postgresql://{user}@{host}:{port}/{dbname}
     TARGET TABLE {target} ({names})
     WITH skip header = 1, fields optionally enclosed by '"', fields escaped by double-quote,
          fields terminated by ',', workers = {PGLOADER_WORKERS},
          concurrency = {PGLOADER_CONCURRENCY}
     BEFORE LOAD DO $$ create table {target} ({ddl}); $$;
""",
        encoding="utf-8",
    )
    return script


def pgloader_argv(binary: str, script: Path) -> list[str]:
    """pgloader on its command file (its log goes to stdout, kept with the row's stderr)."""
    return [binary, "--no-ssl-cert-verification", str(script)]
