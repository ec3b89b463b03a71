"""Time the SQL a merge can use on PostgreSQL: ON CONFLICT, MERGE, and delete + insert.

`python -m bench.mergesql --scale 1` loads lineitem (with its primary key) and the change file's
rows (the 10% changed and 5% new; the deletions are one statement whatever the upsert) into a
staging table, then times each statement inside a transaction that is rolled back, so every one
meets the same table. Each runs twice in its transaction: the second run meets a table that
already holds the rows (a merge of the same file again).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import psycopg
from psycopg import sql

from bench import data as benchdata
from bench.mergedata import FLAG, KEY, merge_files

SCHEMA = "bench_mergesql"
_COLUMNS = [c for c, _ in benchdata.LINEITEM_COLUMNS] + [FLAG]


def _load(url: str, base: Path, changes: Path, work: Path) -> None:
    """The target and staging tables, filled by DuckDB's postgres extension."""
    import duckdb_extensions

    con = duckdb.connect(config={"extension_directory": str(work / "duckdb-extensions")})
    duckdb_extensions.import_extension("postgres", con=con)
    con.execute("LOAD postgres")
    con.execute(f"ATTACH '{url}' AS pg (TYPE postgres)")
    con.execute(f"CREATE TABLE pg.{SCHEMA}.target AS SELECT * FROM read_parquet(?)", [str(base)])  # noqa: S608
    con.execute(
        f"CREATE TABLE pg.{SCHEMA}.stage AS SELECT * FROM read_parquet(?) WHERE NOT {FLAG}",  # noqa: S608
        [str(changes)],
    )
    con.close()


def _statements() -> dict[str, list[sql.Composed]]:
    t, s = sql.SQL(f"{SCHEMA}.target"), sql.SQL(f"{SCHEMA}.stage")
    cols = sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))
    rest = [c for c in _COLUMNS if c not in KEY]
    keys = sql.SQL(", ").join(map(sql.Identifier, KEY))
    on = sql.SQL(" and ").join(sql.SQL("t.{c} = s.{c}").format(c=sql.Identifier(k)) for k in KEY)
    differs = sql.SQL("({}) is distinct from ({})").format(
        sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in rest),
        sql.SQL(", ").join(sql.SQL("{{}}.{}").format(sql.Identifier(c)) for c in rest),
    )
    ex = sql.SQL(differs.as_string(None).replace("{}", "excluded"))
    sx = sql.SQL(differs.as_string(None).replace("{}", "s"))
    sets = sql.SQL(", ").join(
        sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in rest
    )
    msets = sql.SQL(", ").join(sql.SQL("{c} = s.{c}").format(c=sql.Identifier(c)) for c in rest)
    scols = sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in _COLUMNS)
    f = {"t": t, "s": s, "cols": cols, "keys": keys, "on": on, "ex": ex, "sx": sx}
    f |= {"sets": sets, "msets": msets, "scols": scols}
    q = {
        "upsert on conflict": [
            "insert into {t} as t ({cols}) select {cols} from {s}"
            " on conflict ({keys}) do update set {sets} where {ex}"
        ],
        "upsert on conflict in key order": [
            "insert into {t} as t ({cols}) select {cols} from {s} order by {keys}"
            " on conflict ({keys}) do update set {sets} where {ex}"
        ],
        "upsert merge": [
            "merge into {t} t using {s} s on {on} when matched and {sx} then update set {msets}"
            " when not matched then insert ({cols}) values ({scols})"
        ],
        "upsert delete+insert": [
            "delete from {t} t using {s} s where {on}",
            "insert into {t} ({cols}) select {cols} from {s}",
        ],
        "upsert delete+insert in key order": [
            "delete from {t} t using {s} s where {on}",
            "insert into {t} ({cols}) select {cols} from {s} order by {keys}",
        ],
        "insert-only on conflict": [
            "insert into {t} as t ({cols}) select {cols} from {s} on conflict ({keys}) do nothing"
        ],
        "insert-only merge": [
            "merge into {t} t using {s} s on {on} when not matched then insert ({cols})"
            " values ({scols})"
        ],
        "insert-only not exists": [
            "insert into {t} ({cols}) select {scols} from {s} s"
            " where not exists (select 1 from {t} t where {on})"
        ],
    }
    return {name: [sql.SQL(x).format(**f) for x in texts] for name, texts in q.items()}


def compare(url: str, scale: float, work: Path, only: str = "") -> dict[str, Any]:
    """Time each statement twice (changes, then the same again) in a rolled-back transaction."""
    lineitem = benchdata.lineitem(work / "data", scale)
    files = merge_files(lineitem.parquet, work / "data" / f"merge-sf{scale:g}")
    out: dict[str, Any] = {"rows": files.base_rows, "staged": 0, "timings_s": {}}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"drop schema if exists {SCHEMA} cascade")
        conn.execute(f"create schema {SCHEMA}")
        try:
            _load(url, files.base, files.changes, work)
            keys = ", ".join(KEY)
            conn.execute(f"alter table {SCHEMA}.target add primary key ({keys})")
            conn.execute(f"vacuum analyze {SCHEMA}.target")
            conn.execute(f"analyze {SCHEMA}.stage")
            row = conn.execute(f"select count(*) from {SCHEMA}.stage").fetchone()  # noqa: S608
            out["staged"] = int(row[0]) if row else 0
            for name, statements in _statements().items():
                if only and name not in only.split(","):
                    continue
                times = []
                conn.execute("begin")
                for _ in range(2):
                    started = time.monotonic()
                    for statement in statements:
                        conn.execute(statement)
                    times.append(round(time.monotonic() - started, 2))
                conn.execute("rollback")
                conn.execute(f"vacuum {SCHEMA}.target")
                out["timings_s"][name] = times
                print(f"{name}: first {times[0]} s, again {times[1]} s", file=sys.stderr)
        finally:
            conn.execute(f"drop schema if exists {SCHEMA} cascade")
    return out


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from bench.run import bench_dir

    parser = argparse.ArgumentParser(prog="python -m bench.mergesql")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument(
        "--only", default="", help="comma-separated names of the statements to time"
    )
    args = parser.parse_args(argv)
    url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    print(json.dumps(compare(url, args.scale, bench_dir(), args.only)))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
