"""The merge benchmark behind `invoke bench --merge`: each strategy against a full replace.

lineitem (key `l_orderkey, l_linenumber`) is merged once into a new table (the first merge
creates it with its primary key); each strategy then gets a copy of that table and merges the
change file into it (10% changed, 5% new, 1% deleted; bench/mergedata.py), then the same file
again (`--force`: nothing changes). The ratio base is replacing the whole table with the full new
version, measured in the same run (into the table keyed like the others: the swap keeps, and
so rebuilds, its primary key). Every merged table is compared with the replaced one (upsert,
delete-insert; scd2's current rows) or counted (insert-only), so a fast wrong merge fails.

    python -m bench.merge --scale 0.1
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql

from bench import data as benchdata
from bench.measure import measure
from bench.mergedata import FLAG, KEY, MergeFiles, merge_files
from ingest.runtime.paths import project_root

Say = Callable[[str], None]
STRATEGIES = ("upsert", "delete-insert", "insert-only", "scd2")
_COLUMNS = [c for c, _ in benchdata.LINEITEM_COLUMNS] + [FLAG]


def _config(work: Path, name: str, data: Path, schema: str, **database: Any) -> Path:
    path = work / "configs" / f"merge-{name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {"table_name": name, "schema": schema, "metadata_schema": schema, **database}
    path.write_text(
        yaml.safe_dump(
            {
                "path": {"input_path": str(data)},
                "database": settings,
                "schema_config": {"data_type": {FLAG: "bool"}},
            }
        )
    )
    return path


def _ingest(config: Path, url: str, work: Path, *extra: str) -> tuple[float, dict[str, Any]]:
    """Run one ingest as a child process; its wall time and its JSON report (with its CPU)."""
    argv = [sys.executable, "-m", "invoke", "ingest", "--json", "--config", str(config), *extra]
    env = {**os.environ, "DATABASE_URL": url, "PIPELINE_DBT_PROJECT": str(work / "dbt_scratch")}
    got = measure(argv, cwd=project_root(), env=env)
    lines = [x for x in got.stdout.splitlines() if x.startswith("{")]
    if got.returncode != 0 or not lines:
        raise RuntimeError(f"{config.name} failed ({got.returncode}): {got.stderr_tail[-800:]}")
    report = json.loads(lines[-1])
    said = [x for x in got.stderr_tail.splitlines() if x.startswith("merged into")]
    report["merge_log"] = said[-1] if said else ""  # with the time of each step
    report["client_cpu_s"] = round(got.cpu_s, 2)
    return round(got.wall_s, 2), report


def _copy(conn: psycopg.Connection[Any], schema: str, base: str, name: str, scd2: bool) -> None:
    """A keyed copy of the base table for one strategy (scd2: with its validity columns).

    The copy keeps the base's storage options (the fillfactor the first merge gave it).
    """
    src, dst = sql.Identifier(schema, base), sql.Identifier(schema, name)
    keys = sql.SQL(", ").join(map(sql.Identifier, KEY))
    conn.execute(sql.SQL("drop table if exists {}").format(dst))
    found = conn.execute(
        "select coalesce(array_to_string(reloptions, ', '), '') from pg_catalog.pg_class"
        " where oid = %s::regclass",
        (src.as_string(None),),
    ).fetchone()
    options = sql.SQL(f" with ({found[0]})" if found and found[0] else "")
    if scd2:
        conn.execute(
            sql.SQL(
                "create table {}{} as select *, _loaded_at as _valid_from,"
                " null::timestamptz as _valid_to from {}"
            ).format(dst, options, src)
        )
        conn.execute(
            sql.SQL("create unique index on {} ({}) where _valid_to is null").format(dst, keys)
        )
    else:
        conn.execute(sql.SQL("create table {}{} as table {}").format(dst, options, src))
        conn.execute(sql.SQL("alter table {} add primary key ({})").format(dst, keys))
    conn.execute(sql.SQL("vacuum analyze {}").format(dst))


def _differences(conn: psycopg.Connection[Any], schema: str, name: str, where: str) -> int:
    """Rows in one of the merged table and the replaced one but not in the other."""
    cols = sql.SQL(", ").join(map(sql.Identifier, [c for c in _COLUMNS if c != FLAG]))
    a, b = sql.Identifier(schema, name), sql.Identifier(schema, "merge_replace")
    row = conn.execute(
        sql.SQL(
            "select (select count(*) from (select {c} from {a} where {w} except all"
            " select {c} from {b}) x) + (select count(*) from (select {c} from {b} except all"
            " select {c} from {a} where {w}) y)"
        ).format(c=cols, a=a, b=b, w=sql.SQL(where))
    ).fetchone()
    return int(row[0]) if row else -1


def run_merge_bench(
    url: str,
    work: Path,
    *,
    scale: float = 1.0,
    strategies: Sequence[str] = STRATEGIES,
    log: Say = print,
    schema: str = "bench_merge",
) -> dict[str, Any]:
    """Time a full replace, then each strategy's merge of the change file and of it again."""
    lineitem = benchdata.lineitem(work / "data", scale, log=log)
    files = merge_files(lineitem.parquet, work / "data" / f"merge-sf{scale:g}")
    result: dict[str, Any] = {"scale": scale, "rows": files.base_rows, "changes": files.change_rows}
    result["load_avg_1m_before"] = os.getloadavg()[0]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
        try:
            result["rows_out"] = _measure_all(
                conn, url, work, files, schema, strategies, log, result
            )
        finally:
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
    result["load_avg_1m_after"] = os.getloadavg()[0]
    return result


def _measure_all(
    conn: psycopg.Connection[Any],
    url: str,
    work: Path,
    files: MergeFiles,
    schema: str,
    strategies: Sequence[str],
    log: Say,
    result: dict[str, Any],
) -> list[dict[str, Any]]:
    keyed = {"if_table_exists": "merge", "primary_key": list(KEY)}
    log(f"first merge of {files.base_rows:,} rows into a new table (creates it, keyed)")
    wall, _ = _ingest(_config(work, "merge_base", files.base, schema, **keyed), url, work)
    result["first_merge_s"] = wall
    replace = _config(work, "merge_replace", files.expected, schema, if_table_exists="replace")
    _ingest(replace, url, work)  # the table exists and is keyed, as a nightly replace meets it
    keys = sql.SQL(", ").join(map(sql.Identifier, KEY))
    conn.execute(
        sql.SQL("alter table {} add primary key ({})").format(
            sql.Identifier(schema, "merge_replace"), keys
        )
    )
    base, replaced = _ingest(replace, url, work)  # the swap rebuilds the key on the new rows
    result["replace_s"] = base
    result["replace_client_cpu_s"] = replaced["client_cpu_s"]
    log(f"replace with the full new version: {base} s")
    rows = []
    for strategy in strategies:
        name = f"merge_{strategy.replace('-', '_')}"
        _copy(conn, schema, "merge_base", name, strategy == "scd2")
        merge = {"strategy": strategy, "hard_delete": FLAG}
        config = _config(work, name, files.changes, schema, **keyed, merge=merge)
        conn.execute("checkpoint")
        first, report = _ingest(config, url, work)
        again, report_again = _ingest(config, url, work, "--force")
        if strategy in ("upsert", "delete-insert"):
            wrong = _differences(conn, schema, name, "true")
        elif strategy == "scd2":
            wrong = _differences(conn, schema, name, "_valid_to is null")
        else:  # insert-only: the base less the deletions, plus the new keys
            row = conn.execute(
                sql.SQL("select count(*) from {}").format(sql.Identifier(schema, name))
            ).fetchone()
            new = report["merge"]["inserted"]
            wrong = abs(
                (int(row[0]) if row else 0) - (files.base_rows - report["merge"]["deleted"] + new)
            )
        out = {
            "strategy": strategy,
            "merge_s": first,
            "ratio": round(first / base, 2),
            "again_s": again,
            "again_ratio": round(again / base, 2),
            "client_cpu_s": report["client_cpu_s"],
            "client_cpu_again_s": report_again["client_cpu_s"],
            "counts": report["merge"],
            "counts_again": report_again["merge"],
            "steps": report["merge_log"].rpartition("(")[2].rstrip(")"),
            "steps_again": report_again["merge_log"].rpartition("(")[2].rstrip(")"),
            "rows_differing_from_expected": wrong,
        }
        log(json.dumps(out))
        rows.append(out)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Run the merge benchmark from the command line; 1 if a merged table is wrong."""
    import argparse

    from bench.run import bench_dir

    parser = argparse.ArgumentParser(prog="python -m bench.merge")
    parser.add_argument("--scale", type=float, default=1.0, help="TPC-H scale factor")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    args = parser.parse_args(argv)
    url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    result = run_merge_bench(
        url, bench_dir(), scale=args.scale, strategies=args.strategies.split(","), log=say
    )
    text = json.dumps(result, indent=1)
    path = bench_dir() / "results" / f"merge-sf{args.scale:g}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)
    return 0 if all(r["rows_differing_from_expected"] == 0 for r in result["rows_out"]) else 1


if __name__ == "__main__":
    sys.exit(main())
