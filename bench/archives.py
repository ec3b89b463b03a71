"""The benchmark's compressed rows: the dataset's CSV as .csv.gz and .csv.zst, loaded three ways.

For each archive: the shell's `zcat … | psql \\copy … from stdin` (the decompressor and psql in
one pipeline, measured as one process tree), DuckDB's `read_csv` of the archive itself, and this
project's ingest of the archive.
"""

from __future__ import annotations

import gzip
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from bench.data import Dataset
from ingest.stages.stream import zstd

# What the shell tools write by default: gzip -6, zstd -3 (with a checksum).
GZIP_LEVEL = 6
ZSTD_LEVEL = 3
_PIECE = 8 << 20
# Runs in its own Python, as the Parquet row does; DuckDB picks the codec from the suffix.
_DUCKDB_CSV = """\
import os, sys, duckdb, duckdb_extensions
archive, target, extensions = sys.argv[1:4]
con = duckdb.connect(config={"extension_directory": extensions})
duckdb_extensions.import_extension("postgres", con=con)  # installs from the wheel: no download
con.execute("LOAD postgres")
conninfo = os.environ["BENCH_CONNINFO"].replace("'", "''")
con.execute(f"ATTACH '{conninfo}' AS pg (TYPE postgres)")
con.execute(f"CREATE TABLE pg.{target} AS SELECT * FROM read_csv(?, header = true)", [archive])
"""
_UNPACK = {"gz": "gzip -dc", "zst": "zstd -dc"}


@dataclass(frozen=True)
class Baseline:
    """One command that loads an archive with another tool."""

    tool: str
    input: str
    table: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    archive: Path


def archives(data: Dataset) -> dict[str, Path]:
    """The CSV as `.csv.gz` and `.csv.zst` beside it, compressed once and cached."""
    made = {}
    for suffix in ("gz", "zst"):
        final = data.csv.with_name(f"{data.csv.name}.{suffix}")
        if not final.exists():
            partial = final.with_name(f".{final.name}.partial")
            with data.csv.open("rb") as src, partial.open("wb") as raw:
                if suffix == "gz":
                    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL) as out:
                        shutil.copyfileobj(src, out, _PIECE)
                else:
                    options: dict[int, int] = {
                        zstd.CompressionParameter.compression_level: ZSTD_LEVEL,
                        zstd.CompressionParameter.checksum_flag: 1,
                    }
                    with zstd.ZstdFile(raw, "wb", options=options) as out:
                        shutil.copyfileobj(src, out, _PIECE)
            os.replace(partial, final)
        made[suffix] = final
    return made


def baselines(
    suffix: str,
    path: Path,
    stem: str,
    *,
    psql: str,
    conninfo: str,
    ddl: str,
    target: Callable[[str], str],
    env: Mapping[str, str],
    extensions: str,
) -> list[Baseline]:
    """`zcat | psql \\copy` and DuckDB's `read_csv` of one archive; `target` quotes a table."""
    copy_table, duck_table = f"{stem}_copy_{suffix}", f"{stem}_duckdb_{suffix}"
    into = target(copy_table)
    pipeline = " ".join(
        [
            f"{_UNPACK[suffix]} {shlex.quote(str(path))} |",
            shlex.join([psql, *"-X -q -1 -v ON_ERROR_STOP=1 -d".split(), conninfo]),
            shlex.join(["-c", f"create table {into} ({ddl})"]),
            shlex.join(["-c", f"\\copy {into} from pstdin with (format csv, header true)"]),
        ]
    )
    duck = (sys.executable, "-c", _DUCKDB_CSV, str(path), target(duck_table), extensions)
    return [
        Baseline(
            "zcat | psql \\copy", f"csv.{suffix}", copy_table, ("sh", "-c", pipeline), env, path
        ),
        Baseline(
            "duckdb", f"csv.{suffix}", duck_table, duck, {**env, "BENCH_CONNINFO": conninfo}, path
        ),
    ]


def packed_baselines(
    data: Dataset,
    psql: str,
    conninfo: str,
    ddl: str,
    schema: str,
    env: Mapping[str, str],
    extensions: str,
    include: bool = True,
) -> list[Baseline]:
    """Both archives' baselines into `schema`, making the archives first if not cached yet."""
    if not include:
        return []
    stem = data.name.split("-")[0]
    return [
        b
        for suffix, path in archives(data).items()
        for b in baselines(
            suffix,
            path,
            stem,
            psql=psql,
            conninfo=conninfo,
            ddl=ddl,
            target=lambda table: sql.Identifier(schema, table).as_string(None),
            env=env,
            extensions=extensions,
        )
    ]
