"""The commands one benchmark run measures: `psql \\copy`, the peers and this project's ingest."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench import peers
from bench.archives import packed_baselines
from bench.data import Dataset
from ingest.runtime.paths import project_root

STREAMING_LIMIT = "400MB"
_Env = Mapping[str, str]


@dataclass(frozen=True)
class Command:
    tool: str
    input: str
    strategy: str
    table: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    stdin: Path | None = None
    cwd: Path | None = None
    server: str = "shared"  # or "embedded": the project's own server, started for the run
    once: bool = False  # run once even under --repeat (pgloader: minutes per run)


def target(schema: str, table: str) -> str:
    return sql.Identifier(schema, table).as_string(None)


def _ingest(
    data: Dataset,
    url: str,
    schema: str,
    strategy: str,
    fmt: str,
    work: Path,
    env: _Env,
    source: Path | None = None,
) -> Command:
    """This project's `invoke ingest` of the Parquet or CSV file (or `source`) with a strategy."""
    stem = data.name.split("-")[0]
    table = f"{stem}_ingest_{strategy}_{fmt.replace('.', '_')}"
    config = work / "configs" / f"{table}.yml"
    config.parent.mkdir(parents=True, exist_ok=True)
    if source is None:
        source = data.parquet if fmt == "parquet" else data.csv
    settings = {"table_name": table, "if_table_exists": "replace", "schema": schema}
    config.write_text(
        yaml.safe_dump(
            {
                "path": {"input_path": str(source)},
                "database": settings,
                "validation_data": {"sample_size": 0.01},
            }
        ),
        encoding="utf-8",
    )
    argv = [sys.executable, *"-m invoke ingest --json --config".split(), str(config)]
    argv += ["--strategy", strategy]
    if strategy == "streaming":
        argv += ["--memory-limit", STREAMING_LIMIT]
    ingest_env = {**env, "DATABASE_URL": url}
    return Command("ingest", fmt, strategy, table, tuple(argv), ingest_env, cwd=project_root())


def _peers(data: Dataset, url: str, schema: str, work: Path, env: _Env, ddl: str) -> list[Command]:
    """DuckDB, ADBC and (when installed) pgloader, each into a table of its own."""
    parts = conninfo_to_dict(url)
    parts.pop("password", None)
    conninfo = make_conninfo("", **parts)
    stem = data.name.split("-")[0]
    duck = peers.duckdb_argv(data, target(schema, f"{stem}_duckdb"), work / "duckdb-extensions")
    adbc = peers.adbc_argv(data, schema, f"{stem}_adbc")
    commands = [
        Command(
            "duckdb",
            "parquet",
            "-",
            f"{stem}_duckdb",
            tuple(duck),
            {**env, "BENCH_CONNINFO": conninfo},
        ),
        Command("adbc", "parquet", "-", f"{stem}_adbc", tuple(adbc), {**env, "BENCH_URI": url}),
    ]
    pgloader = peers.pgloader_binary()
    if pgloader is not None:
        table = f"{stem}_pgloader"
        script = peers.pgloader_script(data, url, schema, table, ddl, work)
        argv = peers.pgloader_argv(pgloader, script)
        commands.append(Command("pgloader", "csv", "-", table, tuple(argv), env, once=True))
    return commands


def commands(
    data: Dataset,
    url: str,
    schema: str,
    strategies: Sequence[str],
    include_csv: bool,
    work: Path,
    psql: str,
    embedded_url: str | None = None,
    include_compressed: bool = True,
) -> list[Command]:
    """Every command of one run, the `psql \\copy` baseline first.

    With `include_compressed` (and `auto` among the strategies), the CSV as .csv.gz and
    .csv.zst too: `zcat | psql \\copy`, DuckDB's read_csv and ingest's auto (bench/archives.py).
    """
    parts = conninfo_to_dict(url)
    password = parts.pop("password", None)
    conninfo = make_conninfo("", **parts)
    env = {**os.environ, **({"PGPASSWORD": str(password)} if password else {})}
    # The ingest runs refresh dbt sources; the benchmark's tables do not belong in the project.
    env["PIPELINE_DBT_PROJECT"] = str(work / "dbt_scratch")
    copy_table = f"{data.name.split('-')[0]}_copy"
    ddl = ", ".join(f"{sql.Identifier(c).as_string(None)} {t}" for c, t in data.columns)
    copy_target = target(schema, copy_table)
    # -1: one transaction, so with wal_level=minimal the new table's COPY skips the WAL, as ours can
    copy = [psql, *"-X -q -1 -v ON_ERROR_STOP=1 -d".split(), conninfo, "-c"]
    copy += [f"create table {copy_target} ({ddl})", "-c"]
    copy += [f"\\copy {copy_target} from pstdin with (format csv, header true)"]
    commands = [
        Command("psql \\copy", "csv", "-", copy_table, tuple(copy), env, stdin=data.csv),
        *_peers(data, url, schema, work, env, ddl),
    ]
    runs = [(s, "parquet") for s in strategies]
    if include_csv and "auto" in strategies:
        runs.insert(runs.index(("auto", "parquet")) + 1, ("auto", "csv"))
    commands += [_ingest(data, url, schema, s, fmt, work, env) for s, fmt in runs]
    wanted = include_compressed and "auto" in strategies  # beside the ingest's auto runs
    extensions = str(work / "duckdb-extensions")
    packed = packed_baselines(data, psql, conninfo, ddl, schema, env, extensions, wanted)
    commands += [Command(b.tool, b.input, "-", b.table, b.argv, b.env) for b in packed]
    for name, archive in {b.input: b.archive for b in packed}.items():
        commands.append(_ingest(data, url, schema, "auto", name, work, env, archive))
    if embedded_url is not None:  # the same load on the project's own server
        row = _ingest(data, embedded_url, schema, "auto", "parquet", work / "embedded", env)
        commands.append(replace(row, tool="ingest embedded", server="embedded"))
    return commands
