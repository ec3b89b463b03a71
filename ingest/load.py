"""COPY batches into a staging table over parallel connections, then swap it in atomically."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import psycopg
from psycopg import sql

from ingest import encode
from ingest.db import connect
from ingest.errors import BadColumnName, IngestError, SchemaMismatch, TargetExists
from ingest.swap import replace_table

_DONE = object()
# Frame bytes encoded at a time by one worker; the RSS watch may lower it under pressure.
PIECE_BYTES = 8 << 20
LOADED_AT = "_loaded_at"
RUN_ID = "_run_id"


@dataclass(frozen=True)
class Target:
    """The table a source lands in."""

    schema: str
    table: str
    if_exists: str

    @property
    def display(self) -> str:
        """The schema-qualified name, quoted as PostgreSQL would need it."""
        return f"{_quote(self.schema)}.{_quote(self.table)}"

    def ident(self) -> sql.Composed:
        """The qualified name as a driver-quoted identifier."""
        return sql.SQL(".").join([sql.Identifier(self.schema), sql.Identifier(self.table)])


def _quote(name: str) -> str:
    plain = name.isidentifier() and name == name.lower() and name.isascii()
    return name if plain else '"' + name.replace('"', '""') + '"'


@dataclass
class _Progress:
    rows: int = 0
    bytes: int = 0


class Loader:
    """Loads one run into a staging table, then commits it to the target in one transaction.

    Use as a context manager: leaving it with an exception drops the staging table and leaves the
    target exactly as it was.
    """

    def __init__(
        self,
        url: str,
        target: Target,
        columns: dict[str, pl.DataType],
        run_id: str,
        workers: int,
        log: Callable[[str], None],
    ) -> None:
        self.url = url
        self.target = target
        self.columns = columns
        self.run_id = run_id
        self.workers = workers
        self.log = log
        self.staging = Target(target.schema, f"{target.table[:40]}__stg_{run_id[:12]}", "replace")
        self.progress = _Progress()
        self.piece_bytes = PIECE_BYTES
        self._queue: queue.Queue[object] = queue.Queue(maxsize=workers)
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._control: psycopg.Connection[tuple[object, ...]] | None = None

    def __enter__(self) -> Loader:
        self._control = connect(self.url, autocommit=True)
        self._prepare()
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"copy-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self._stop_workers()
            self._drop_staging()
        if self._control is not None:
            self._control.close()

    def _prepare(self) -> None:
        """Refuse early for `fail`, check `append` columns, and create the staging table."""
        assert self._control is not None
        conn = self._control
        exists = _table_exists(conn, self.target)
        if exists and self.target.if_exists == "fail":
            raise TargetExists(self.target.display)
        if exists and self.target.if_exists == "append":
            have = _table_columns(conn, self.target)
            want = [*self.columns, LOADED_AT, RUN_ID]
            file_lacks = [c for c in have if c not in want]
            file_adds = [c for c in want if c not in have]
            if file_lacks or file_adds:
                raise SchemaMismatch(self.target.display, missing=file_lacks, extra=file_adds)
        conn.execute(
            sql.SQL("create schema if not exists {}").format(sql.Identifier(self.target.schema))
        )
        defs = [
            sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(encode.pg_type(dtype)))
            for name, dtype in self.columns.items()
        ]
        # Server-side defaults stamp lineage columns without sending them with every row.
        defs.append(
            sql.SQL("{} timestamptz not null default now()").format(sql.Identifier(LOADED_AT))
        )
        defs.append(
            sql.SQL("{} text not null default {}").format(
                sql.Identifier(RUN_ID), sql.Literal(self.run_id)
            )
        )
        conn.execute(sql.SQL("drop table if exists {}").format(self.staging.ident()))
        conn.execute(
            sql.SQL("create table {} ({})").format(self.staging.ident(), sql.SQL(", ").join(defs))
        )

    def send(self, batch: pl.DataFrame) -> None:
        """Queue a batch for the COPY workers; blocks while they are busy (bounding memory)."""
        while True:
            self._raise_worker_error()
            try:
                self._queue.put(batch, timeout=0.5)
                return
            except queue.Full:
                continue

    def _work(self) -> None:
        copy_sql = sql.SQL("copy {} ({}) from stdin (format binary)").format(
            self.staging.ident(), sql.SQL(", ").join(map(sql.Identifier, self.columns))
        )
        try:
            with connect(self.url) as conn, conn.cursor() as cur:
                with cur.copy(copy_sql) as copy:
                    copy.write(encode.HEADER)
                    while (item := self._queue.get()) is not _DONE:
                        assert isinstance(item, pl.DataFrame)
                        # Encode in pieces: the encoder's scratch memory scales with its input.
                        for piece in item.iter_slices(self._piece_rows(item)):
                            data = encode.encode(piece)
                            copy.write(data)
                            with self._lock:
                                self.progress.rows += piece.height
                                self.progress.bytes += len(data)
                            if self._errors:
                                raise _Cancelled
                    copy.write(encode.TRAILER)
                conn.commit()
        except _Cancelled:
            pass
        except BaseException as exc:  # handed to the main thread, which raises it
            with self._lock:
                self._errors.append(exc)
            self._drain()

    def _piece_rows(self, batch: pl.DataFrame) -> int:
        row_bytes = batch.estimated_size() / max(batch.height, 1)
        return max(int(self.piece_bytes / max(row_bytes, 1.0)), 1_000)

    def _drain(self) -> None:
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    def _raise_worker_error(self) -> None:
        if self._errors:
            error = self._errors[0]
            if isinstance(error, IngestError):
                raise error
            raise IngestError(f"loading {self.target.display} failed: {error}") from error

    def _stop_workers(self) -> None:
        with self._lock:
            if not self._errors:
                self._errors.append(_Cancelled())
        self._drain()
        for _ in self._threads:
            try:
                self._queue.put_nowait(_DONE)
            except queue.Full:
                self._drain()
        for thread in self._threads:
            thread.join(timeout=30)

    def finish(self) -> int:
        """Wait for the workers, then make the staged rows the target's in one transaction.

        Returns:
            Rows committed by this run.
        """
        for _ in self._threads:
            self._queue.put(_DONE)
        for thread in self._threads:
            thread.join()
        self._raise_worker_error()
        assert self._control is not None
        with connect(self.url) as conn:
            # The defaults only stamped this run's rows; later inserts must not inherit them.
            conn.execute(
                sql.SQL(
                    "alter table {} alter column {} drop default, alter column {} drop default"
                ).format(self.staging.ident(), sql.Identifier(LOADED_AT), sql.Identifier(RUN_ID))
            )
            if self.target.if_exists == "append" and _table_exists(conn, self.target):
                cols = sql.SQL(", ").join(map(sql.Identifier, [*self.columns, LOADED_AT, RUN_ID]))
                conn.execute(
                    sql.SQL("insert into {} ({}) select {} from {}").format(
                        self.target.ident(), cols, cols, self.staging.ident()
                    )
                )
                conn.execute(sql.SQL("drop table {}").format(self.staging.ident()))
            else:
                replace_table(conn, self.staging, self.target, self.log)
            conn.commit()
        return self.progress.rows

    def _drop_staging(self) -> None:
        try:
            with connect(self.url, autocommit=True, retry_seconds=2) as conn:
                conn.execute(sql.SQL("drop table if exists {}").format(self.staging.ident()))
        except (psycopg.Error, IngestError) as exc:
            self.log(
                f"could not drop staging table {self.staging.display}: {exc}; "
                "the next run removes it"
            )


class _Cancelled(Exception):
    """A worker stopped because another one failed."""


def _table_exists(conn: psycopg.Connection[tuple[object, ...]], target: Target) -> bool:
    row = conn.execute(
        "select 1 from pg_catalog.pg_tables where schemaname = %s and tablename = %s",
        (target.schema, target.table),
    ).fetchone()
    return row is not None


def _table_columns(conn: psycopg.Connection[tuple[object, ...]], target: Target) -> list[str]:
    rows = conn.execute(
        "select a.attname from pg_catalog.pg_attribute a"
        " join pg_catalog.pg_class c on c.oid = a.attrelid"
        " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = %s and a.attnum > 0 and not a.attisdropped"
        " order by a.attnum",
        (target.schema, target.table),
    ).fetchall()
    return [str(r[0]) for r in rows]


def check_column_names(path: Path, names: list[str]) -> None:
    """Refuse names PostgreSQL would truncate or reject, and names used twice.

    Raises:
        BadColumnName: naming the file and the column.
    """
    seen: set[str] = set()
    for name in names:
        if not name.strip():
            raise BadColumnName(path, name, "is empty")
        if "\x00" in name:
            raise BadColumnName(path, name, "contains a NUL character")
        if len(name.encode()) > 63:
            raise BadColumnName(path, name, "is longer than PostgreSQL's 63-byte limit")
        if name in seen:
            raise BadColumnName(path, name, "appears twice (or clashes with a lineage column)")
        seen.add(name)
