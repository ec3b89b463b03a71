"""`invoke bench` as a command: run the benchmark, print and save its table."""

from __future__ import annotations

from pathlib import Path

from bench.run import bench_dir, run_bench
from ingest.commands.session import EXIT_FAILED, EXIT_OK, Session
from ingest.errors import UsageError
from ingest.pg.db import resolve_url


def bench(
    s: Session,
    *,
    scale: str = "1",
    rows: int = 0,
    strategies: str = "auto,eager,lazy,streaming",
    repeat: int = 1,
    csv: bool = True,
    s3: bool = True,
    embedded: bool = True,
    merge: bool = False,
    compressed: bool = True,
    executor: str = "",
    data: str = "",
) -> int:
    """Time ingest against psql \\copy and its peers; exit 1 if one of the commands failed.

    With `merge`, time the merge strategies against a full replace instead (bench/merge.py);
    exit 1 if a merged table differs from the expected one.
    """
    if merge:
        from bench.merge import main as merge_main

        return merge_main(["--scale", scale])
    url = resolve_url(None, s.note)
    if executor == "dask":
        return _dask(s, url, scale, rows or 50_000_000, repeat, Path(data) if data else None)
    if executor not in ("", "local"):
        raise UsageError(f"--executor {executor!r}: pick dask (local is the default benchmark)")
    try:
        report = run_bench(
            url,
            scale=float(scale),
            rows=rows or None,
            strategies=[x.strip() for x in strategies.split(",") if x.strip()],
            include_csv=csv,
            include_compressed=compressed,
            repeat=repeat,
            log=s.note,
            s3=s3,
            embedded_server=embedded,
        )
    except ValueError as exc:  # a wrong --scale, --repeat or strategy name
        raise UsageError(str(exc)) from None
    path = report.write(bench_dir())
    s.out.print(report.table())
    for line in report.checks:  # the memory and speed targets, judged on this run's rows
        s.out.print(line, highlight=False, markup=False)
    s.note(f"saved {path}")
    failed = [r.tool + "/" + r.strategy for r in report.rows if not r.ok]
    if failed:
        s.note(f"error: benchmark commands failed: {', '.join(failed)}")
        return EXIT_FAILED
    return EXIT_OK


def _dask(s: Session, url: str, scale: str, rows: int, repeat: int, data: Path | None) -> int:
    """The Dask executor against the local one on lineitem and an 8-file synthetic glob."""
    from bench import dask as benchdask
    from bench import data as benchdata

    folder = data or bench_dir() / "data"
    lineitem = benchdata.lineitem(folder, float(scale), log=s.note)
    inputs = [
        benchdask.Input(lineitem.name, str(lineitem.parquet), lineitem.rows, "replace"),
        benchdask.synthetic_glob(folder, rows),
    ]
    runs = benchdask.run(url, inputs, bench_dir() / "dask", max(repeat, 1), s.note)
    s.out.print(benchdask.table(runs))
    failed = [f"{r.input}/{r.executor}" for r in runs if not r.ok]
    if failed:
        s.note(f"error: benchmark loads failed: {', '.join(failed)}")
        return EXIT_FAILED
    return EXIT_OK
