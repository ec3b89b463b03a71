"""The run ledger: one row per run and one per loaded file, in the metadata schema.

`runs` says what every run did (or that it was killed); `files` says which file content is
already in which table, written in the same transaction as the rows, so a rerun can skip it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, LiteralString

import yaml
from psycopg import sql
from psycopg.rows import class_row
from pydantic import BaseModel
from rich.table import Table
from rich.text import Text

from ingest.pg.db import Conn
from ingest.runtime.secrets import scrub
from ingest.stages.remote import Location, RemoteFile
from ingest.state.tables import create_tables

RunStatus = Literal["running", "success", "failed", "killed", "skipped"]
STATUSES: tuple[str, ...] = ("running", "success", "failed", "killed", "skipped")

# Any constant works; it only serialises concurrent `ensure_ledger` calls across processes.
_CREATE_LOCK_KEY = 0x70676C6B6C656467  # "pglkledg"
_DDL: tuple[LiteralString, ...] = (
    """create table if not exists {schema}.runs (
        run_id text primary key, config_hash text, source text, file text, target text,
        strategy text, rows_read bigint, rows_loaded bigint, rows_rejected bigint,
        peak_rss_mb real, duration_s real, status text not null, error text,
        started_at timestamptz not null default now(), finished_at timestamptz,
        backend_pid int, host text)""",
    "create index if not exists runs_started_at on {schema}.runs (started_at desc)",
    """create table if not exists {schema}.files (
        path text not null, size bigint not null, mtime timestamptz, fingerprint text not null,
        target text not null, run_id text not null,
        loaded_at timestamptz not null default now())""",
    "create index if not exists files_target_fingerprint on {schema}.files (target, fingerprint)",
)

BLOCK = 64 * 1024
EDGE = 1024 * 1024
SAMPLES = 64
# Files up to this size are hashed whole: reading them costs about as much as sampling.
WHOLE_FILE_LIMIT = 2 * EDGE + SAMPLES * BLOCK

_SECRET_KEY = re.compile(r"(^|_)(url|dsn|conninfo|password|passwd|secret|token)($|_)", re.I)


def ensure_ledger(conn: Conn, schema: str) -> None:
    """Create the metadata schema and its tables if missing; safe when processes race."""
    with conn.transaction():
        create_tables(conn, schema, _CREATE_LOCK_KEY, _DDL)


def config_hash(config: str | Mapping[str, Any] | BaseModel) -> str:
    """A stable hash of a config with database URLs, passwords and other secrets left out.

    Args:
        config: the config text (YAML, TOML or JSON), a mapping, or a pydantic model.

    Returns:
        A hex digest that changes when any setting except a secret changes.
    """
    data: Any = config
    if isinstance(config, BaseModel):
        data = config.model_dump(mode="json", by_alias=True)
    elif isinstance(config, str):
        data = _parse_text(config)
    canonical = json.dumps(
        _without_secrets(data), sort_keys=True, default=str, separators=(",", ":")
    )
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def _parse_text(text: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        pass
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return parsed if isinstance(parsed, dict | list) else text


def _without_secrets(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            str(k): _without_secrets(v) for k, v in value.items() if not _SECRET_KEY.search(str(k))
        }
    if isinstance(value, list | tuple):
        return [_without_secrets(v) for v in value]
    if isinstance(value, str):
        return scrub(value, ())
    return value


def sample_ranges(size: int) -> list[tuple[int, int]]:
    """The (offset, length) ranges a sampled fingerprint reads from a file of `size` bytes."""
    if size <= WHOLE_FILE_LIMIT:
        return [(0, size)]
    step = (size - 2 * EDGE - BLOCK) / (SAMPLES - 1)
    middle = [(EDGE + round(i * step), BLOCK) for i in range(SAMPLES)]
    return [(0, EDGE), *middle, (size - EDGE, EDGE)]


def fingerprint(path: Path, *, full: bool = False) -> str:
    """A content fingerprint of a file: sampled (cheap on 20 GB) unless `full`.

    A sampled fingerprint hashes the size, the first and last MiB and 64 evenly spaced 64 KiB
    blocks (6 MiB read, whatever the size). Files up to `WHOLE_FILE_LIMIT` (6 MiB) are hashed
    whole. Limit: on a bigger file, an edit that keeps the size and falls between the sampled
    blocks goes unnoticed; pass `full=True` when that matters (it reads the whole file).

    Returns:
        `"full:<hex>"` when every byte was hashed, else `"sampled:<hex>"`.
    """
    size = path.stat().st_size
    digest = hashlib.blake2b(str(size).encode() + b"\0", digest_size=20)
    ranges = [(0, size)] if full else sample_ranges(size)
    with path.open("rb", buffering=0) as handle:
        for offset, length in ranges:
            handle.seek(offset)
            remaining = length
            while remaining > 0:
                chunk = handle.read(min(remaining, 8 * EDGE))
                if not chunk:
                    break
                digest.update(chunk)
                remaining -= len(chunk)
    kind = "full" if full or size <= WHOLE_FILE_LIMIT else "sampled"
    return f"{kind}:{digest.hexdigest()}"


@dataclass(frozen=True)
class FileFacts:
    """What the ledger records about an input file."""

    path: Location
    size: int
    mtime: datetime | None
    fingerprint: str


def describe_file(path: Location, *, full: bool = False) -> FileFacts:
    """The size, modification time and fingerprint of a file.

    A remote object's come from its metadata (see `RemoteFile.fingerprint`): nothing is read.
    """
    if isinstance(path, RemoteFile):
        return FileFacts(path, path.size, path.last_modified, path.fingerprint)
    stat = path.stat()
    mtime = datetime.fromtimestamp(stat.st_mtime, tz=UTC)
    return FileFacts(path, stat.st_size, mtime, fingerprint(path, full=full))


def start_run(
    conn: Conn,
    schema: str,
    *,
    run_id: str,
    config_hash: str,
    source: str,
    file: str,
    target: str,
    strategy: str,
) -> None:
    """Record a run as 'running', committed at once, with this connection's backend pid.

    Call it on the connection that stays open for the whole run (the one holding the table
    lock): `mark_stale_runs` treats the run as killed once that backend is gone.
    """
    statement = sql.SQL(
        "insert into {}.runs (run_id, config_hash, source, file, target, strategy, status,"
        " started_at, backend_pid, host)"
        " values (%s, %s, %s, %s, %s, %s, 'running', now(), pg_backend_pid(), %s)"
    ).format(sql.Identifier(schema))
    with conn.transaction():
        conn.execute(
            statement,
            (run_id, config_hash, source, file, target, strategy, socket.gethostname()),
        )


def finish_run(
    conn: Conn,
    schema: str,
    run_id: str,
    *,
    status: RunStatus,
    rows_read: int | None,
    rows_loaded: int | None,
    rows_rejected: int | None,
    peak_rss_mb: float | None,
    duration_s: float | None,
    error: str | None,
    secrets: Sequence[str] = (),
) -> None:
    """Record how a run ended; the error is stored without the connection's or given secrets.

    Raises:
        ValueError: the status is unknown or no run has that id.
    """
    if status not in STATUSES:
        raise ValueError(f"unknown run status {status!r}; use one of {', '.join(STATUSES)}")
    hidden = [conn.info.password, os.environ.get("PGPASSWORD"), *secrets]
    stored = scrub(error, hidden)[:8000] if error is not None else None
    statement = sql.SQL(
        "update {}.runs set status = %s, rows_read = %s, rows_loaded = %s, rows_rejected = %s,"
        " peak_rss_mb = %s, duration_s = %s, error = %s, finished_at = now() where run_id = %s"
    ).format(sql.Identifier(schema))
    with conn.transaction():
        cursor = conn.execute(
            statement,
            (
                status,
                rows_read,
                rows_loaded,
                rows_rejected,
                peak_rss_mb,
                duration_s,
                stored,
                run_id,
            ),
        )
    if cursor.rowcount != 1:
        raise ValueError(f"no run {run_id!r} in {schema}.runs; call start_run first")


def _has_ledger(conn: Conn, schema: str) -> bool:
    row = conn.execute("select to_regclass(format('%%I.runs', %s::text))", (schema,)).fetchone()
    return row is not None and row[0] is not None


def mark_stale_runs(conn: Conn, schema: str) -> int:
    """Mark 'running' runs whose backend is gone as 'killed'; returns how many (0 without a ledger).

    A backend counts as gone when no session has its pid or the session with that pid started
    after the run did (the pid was reused). Sessions whose start we may not see count as alive.
    """
    if not _has_ledger(conn, schema):
        return 0
    statement = sql.SQL(
        "update {}.runs r set status = 'killed', finished_at = now(),"
        " error = 'the process ended without finishing (killed or crashed)'"
        " where r.status = 'running' and not exists ("
        "  select 1 from pg_catalog.pg_stat_activity a where a.pid = r.backend_pid"
        "  and (a.backend_start is null or a.backend_start <= r.started_at))"
    ).format(sql.Identifier(schema))
    with conn.transaction():
        return conn.execute(statement).rowcount


def loaded_file(conn: Conn, schema: str, target: str, fingerprint: str) -> str | None:
    """The run that committed this content into this target, or None.

    It trusts `files`, which commits together with the rows, not `runs.status`: a process
    killed after its commit but before `finish_run` shows 'killed' yet its rows are in.
    """
    row = conn.execute(
        sql.SQL(
            "select run_id from {}.files where target = %s and fingerprint = %s"
            " order by loaded_at desc limit 1"
        ).format(sql.Identifier(schema)),
        (target, fingerprint),
    ).fetchone()
    return str(row[0]) if row else None


def record_file(
    conn: Conn,
    schema: str,
    *,
    path: str,
    size: int,
    mtime: datetime | None,
    fingerprint: str,
    target: str,
    run_id: str,
    replace: bool = False,
) -> None:
    """Record a loaded file; call it inside the transaction that commits the rows.

    Args:
        replace: the run replaced the table, so earlier files' rows are gone: forget them.
    """
    ident = sql.Identifier(schema)
    if replace:
        conn.execute(sql.SQL("delete from {}.files where target = %s").format(ident), (target,))
    conn.execute(
        sql.SQL(
            "insert into {}.files (path, size, mtime, fingerprint, target, run_id)"
            " values (%s, %s, %s, %s, %s, %s)"
        ).format(ident),
        (path, size, mtime, fingerprint, target, run_id),
    )


def committed(conn: Conn, schema: str, run_id: str) -> bool:
    """Whether the run's `files` row is in, i.e. the transaction that wrote it committed."""
    row = conn.execute(
        sql.SQL("select 1 from {}.files where run_id = %s limit 1").format(sql.Identifier(schema)),
        (run_id,),
    ).fetchone()
    return row is not None


@dataclass(frozen=True)
class RunRow:
    """One row of the `runs` table."""

    run_id: str
    config_hash: str | None
    source: str | None
    file: str | None
    target: str | None
    strategy: str | None
    rows_read: int | None
    rows_loaded: int | None
    rows_rejected: int | None
    peak_rss_mb: float | None
    duration_s: float | None
    status: str
    error: str | None
    started_at: datetime
    finished_at: datetime | None
    backend_pid: int | None
    host: str | None


def recent_runs(conn: Conn, schema: str, limit: int = 20) -> list[RunRow]:
    """The latest runs, newest first; empty when the ledger does not exist yet."""
    if not _has_ledger(conn, schema):
        return []
    names = sql.SQL(", ").join(sql.Identifier(f) for f in RunRow.__dataclass_fields__)
    query = sql.SQL("select {} from {}.runs order by started_at desc limit %s").format(
        names, sql.Identifier(schema)
    )
    with conn.cursor(row_factory=class_row(RunRow)) as cursor:
        return cursor.execute(query, (limit,)).fetchall()


_STYLE = {"success": "green", "failed": "red", "killed": "red", "running": "yellow"}


def _number(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}{unit}"


def _short(lines: list[str], width: int = 60) -> str:
    if not lines:
        return ""
    more = len(lines[0]) > width or len(lines) > 1
    return lines[0][:width] + ("…" if more else "")


def runs_table(rows: Sequence[RunRow]) -> Table:
    """The runs as a rich table for `invoke runs`."""
    table = Table(title="runs")
    for name in ("run", "status", "source", "target", "rows", "rejected", "time", "memory"):
        table.add_column(
            name, justify="right" if name in ("rows", "rejected", "time", "memory") else "left"
        )
    for name in ("strategy", "started", "error"):
        table.add_column(name, overflow="fold" if name == "error" else "ellipsis")
    for r in rows:
        error = (r.error or "").strip().splitlines()
        table.add_row(
            Text(r.run_id[:8]),  # `invoke report` takes this prefix
            Text(r.status, style=_STYLE.get(r.status, "dim")),
            Text(r.source or ""),
            Text(r.target or ""),
            _number(r.rows_loaded),
            _number(r.rows_rejected),
            _number(r.duration_s, " s", 1),
            _number(r.peak_rss_mb, " MB"),
            r.strategy or "",
            r.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            Text(_short(error)),
        )
    return table
