"""COPY a run's batches into its staging table, in binary, over one or more connections.

With several connections, each COPYs into a staging table created beforehand. With one, that
connection creates the table inside its own transaction and COPYs into it while encoder threads
keep it fed; the commit then swaps in that same transaction (see `StagingCopy`). An append whose
columns match the target's COPYs straight into the target in that transaction.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl
from psycopg import sql

from ingest.errors import IngestError
from ingest.errors_server import DatabaseUnavailable, ServerGone
from ingest.pg import staging as pg_staging
from ingest.pg.db import Conn, connect, server_fault
from ingest.pg.target import (
    Target,
)
from ingest.runtime.hooks import reached
from ingest.stages import encode
from ingest.state.refusal import StreamLog, refusal

_DONE = object()
# Frame bytes encoded at a time by one worker; the RSS watch may lower it under pressure.
PIECE_BYTES = 2 << 20
MIN_PIECE_BYTES = 1 << 20
# Threads encoding for a single connection, and encoded pieces waiting for it.
ENCODERS = 2
ENCODED_AHEAD = 2 * ENCODERS


@dataclass
class _Progress:
    rows: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class _Batch:
    frame: pl.DataFrame
    rows: np.ndarray | None  # each row's index in the file, to name a row the server refuses
    line_offset: int


@dataclass(frozen=True)
class _Encoded:
    data: memoryview
    rows: np.ndarray | None
    count: int
    line_offset: int


class StagingCopy:
    """COPYs one run's batches into its staging table; `close` hands the table to the commit.

    Use as a context manager: leaving it with an exception drops the staging table and leaves the
    target exactly as it was.

    With `workers` >= 2, each worker thread encodes and COPYs over its own connection into a
    staging table created up front. With one worker, a single connection creates the staging
    table in its own transaction and COPYs into it while `ENCODERS` threads encode ahead, and
    `finish` swaps and commits in that transaction. PostgreSQL then skips the free-space map
    for the new table (and with `wal_level=minimal`, the WAL); `copy_connections` says when this
    is the faster way. A crash leaves nothing behind: the uncommitted table vanishes with the
    transaction.

    `into_target` lets one connection append straight into an existing target whose columns
    have exactly the encoded types: rows are then written once, not COPYed into staging and
    inserted again, and stay invisible to others until the commit.

    `within` lends the single connection's open transaction instead: the batches are COPYed in
    it into `staging`, a table that already exists, and `close` leaves the transaction open for
    its owner (a partition task's claim, quarantine and result go in it too; see
    `ingest.executors.exactly_once`). Nothing is prepared, created or dropped then.
    """

    def __init__(
        self,
        url: str,
        control: Conn,
        target: Target,
        columns: dict[str, pl.DataType],
        run_id: str,
        *,
        workers: int,
        lineage: tuple[str, str],
        into_target: bool = False,
        log: Callable[[str], None],
        within: Conn | None = None,
        staging: Target | None = None,
    ) -> None:
        self.url = url
        self.target = target
        self.columns = columns
        self.run_id = run_id
        self.workers = 1 if within is not None else workers
        self.lineage = lineage
        self.into_target = into_target
        self.direct = False  # appending straight into the target (decided by _prepare)
        self.log = log
        self.staging = staging or pg_staging.staging_table(target, run_id)
        self.started_at = datetime.now(UTC)
        self.progress = _Progress()
        self.piece_bytes = PIECE_BYTES
        self._queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._control = control
        self._stop = threading.Event()
        self._create: sql.Composed | None = None
        self._lead: encode.Stamp | None = None  # direct: the lineage fields of every row
        self._encoded: queue.Queue[object] = queue.Queue(maxsize=ENCODED_AHEAD)
        self._held: Conn | None = within  # one-transaction mode: the COPY's open transaction
        self._lent = within is not None  # the transaction is its owner's to end
        # A lent transaction is one partition's, and the executor runs two at once: one encoder
        # each keeps the threads (and the GIL's hand-offs) as many as with two connections.
        self.encoders = 1 if self._lent else ENCODERS
        self._sender: threading.Thread | None = None

    @property
    def one_transaction(self) -> bool:
        """Whether one connection creates, fills and swaps in the staging table."""
        return self.workers == 1

    def __enter__(self) -> StagingCopy:
        if not self._lent:
            self._prepare()
        if self.one_transaction:
            work, count = self._encode, self.encoders
            self._sender = threading.Thread(target=self._send, name="copy", daemon=True)
            self._sender.start()
        else:
            work, count = self._work, self.workers
        for i in range(count):
            thread = threading.Thread(target=work, name=f"{work.__name__[1:]}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self._stop_workers()
            if not self.one_transaction:  # else the staging table went with its transaction
                pg_staging.drop_staging(self.url, self.staging, self.log)

    def _prepare(self) -> None:
        """Refuse early for `fail`, clear dead runs' leftovers, and create the staging table.

        The caller holds the table's lock, so any staging table of this target is a leftover.
        """
        conn = self._control
        pg_staging.prepare_target(conn, self.target, [*self.columns, *self.lineage], self.log)
        if self.one_transaction and self.into_target and self.target.if_exists == "append":
            self._lead = pg_staging.direct_stamp(
                conn,
                self.target,
                self.columns,
                self.lineage,
                self.started_at,
                self.run_id,
                self.log,
            )
            self.direct = self._lead is not None
        if not self.direct:
            self._create = pg_staging.create_sql(self.staging, self.columns)
            if not self.one_transaction:
                conn.execute(self._create)
        reached("staged")

    def send(
        self, batch: pl.DataFrame, rows: np.ndarray | None = None, line_offset: int = 0
    ) -> None:
        """Queue a batch for the COPY workers; blocks while they are busy (bounding memory).

        Args:
            batch: rows in the target's columns.
            rows: each row's 0-based index in the file, so that a value the server refuses
                can be named by its row (a CSV line is the index plus `line_offset`).
            line_offset: as for `rows`.
        """
        self._put(_Batch(batch, rows, line_offset))

    def _put(self, item: object) -> None:
        while True:
            self._raise_worker_error()
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _copy_sql(self) -> sql.Composed:
        into, names = self.staging, list(self.columns)
        if self.direct:  # the lineage columns lead: `encode` writes them first in every row
            into, names = self.target, [*self.lineage, *names]
        return sql.SQL("copy {} ({}) from stdin (format binary)").format(
            into.ident(), sql.SQL(", ").join(map(sql.Identifier, names))
        )

    def _work(self) -> None:
        """One of several connections: encode batches and COPY them, then commit."""
        copy_sql = self._copy_sql()
        log = StreamLog()
        try:
            with connect(self.url) as conn, conn.cursor() as cur:
                with cur.copy(copy_sql) as copy:
                    copy.write(encode.HEADER)
                    while (item := self._next()) is not _DONE:
                        assert isinstance(item, _Batch)
                        for piece, rows in self._pieces(item):
                            data = encode.encode(piece)
                            log.add(rows, piece.height, item.line_offset)
                            copy.write(data)
                            reached("copying")
                            with self._lock:
                                self.progress.rows += piece.height
                                self.progress.bytes += len(data)
                            if self._stop.is_set():
                                raise _Cancelled
                    copy.write(encode.TRAILER)
                conn.commit()
        except _Cancelled:
            pass
        except BaseException as exc:  # handed to the main thread, which raises it
            self._fail(refusal(exc, log) or exc)

    def _pieces(self, item: _Batch) -> Iterator[tuple[pl.DataFrame, np.ndarray | None]]:
        """A batch in pieces: the encoder's scratch memory scales with its input."""
        step = self._piece_rows(item.frame)
        for start in range(0, item.frame.height, step):
            rows = None if item.rows is None else item.rows[start : start + step]
            yield item.frame.slice(start, step), rows

    def _encode(self) -> None:
        """One-transaction mode: encode batches for the single connection, in pieces."""
        try:
            while (item := self._next()) is not _DONE:
                assert isinstance(item, _Batch)
                for piece, rows in self._pieces(item):
                    data = encode.encode(piece, self._lead if self.direct else None)
                    self._hand_over(_Encoded(data, rows, piece.height, item.line_offset))
            self._hand_over(_DONE)
        except _Cancelled:
            pass
        except BaseException as exc:  # handed to the main thread, which raises it
            self._fail(exc)

    def _hand_over(self, item: object) -> None:
        while True:
            if self._stop.is_set():
                raise _Cancelled
            try:
                self._encoded.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _send(self) -> None:
        """One-transaction mode: create the staging table and COPY every encoded piece into it.

        The transaction stays open for `finish`, which swaps and commits in it.
        """
        log = StreamLog()
        try:
            conn = self._held or connect(self.url)
            self._held = conn
            if self._create is not None:
                conn.execute(self._create)
            with conn.cursor() as cur, cur.copy(self._copy_sql()) as copy:
                copy.write(encode.HEADER)
                finished = 0
                while finished < self.encoders:
                    if self._stop.is_set():
                        raise _Cancelled
                    try:
                        data = self._encoded.get(timeout=0.2)
                    except queue.Empty:
                        continue
                    if data is _DONE:
                        finished += 1
                        continue
                    assert isinstance(data, _Encoded)
                    log.add(data.rows, data.count, data.line_offset)
                    copy.write(data.data)
                    reached("copying")
                    with self._lock:  # counted as sent, not as encoded
                        self.progress.rows += data.count
                        self.progress.bytes += len(data.data)
                copy.write(encode.TRAILER)
        except _Cancelled:
            self._release()
        except BaseException as exc:
            self._release()
            self._fail(refusal(exc, log) or exc)

    def _release(self) -> None:
        """Close the held transaction, if any: an uncommitted staging table goes with it."""
        held, self._held = self._held, None
        if held is not None and not self._lent:
            held.close()

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)
        self._stop.set()  # the other threads abort too: the run commits whole or not at all
        self._drain()

    def ease(self, drain: bool) -> int:
        """Under memory pressure: encode in half-size pieces; with `drain`, empty the queue first.

        Returns:
            The new piece size in bytes.
        """
        self.piece_bytes = max(self.piece_bytes // 2, MIN_PIECE_BYTES)
        while drain and not self._queue.empty() and not self._errors:
            threading.Event().wait(0.05)
        return self.piece_bytes

    def _piece_rows(self, batch: pl.DataFrame) -> int:
        row_bytes = batch.estimated_size() / max(batch.height, 1)
        return max(int(self.piece_bytes / max(row_bytes, 1.0)), 1_000)

    def _drain(self) -> None:
        for waiting in (self._queue, self._encoded):
            try:
                while True:
                    waiting.get_nowait()
            except queue.Empty:
                pass

    def _raise_worker_error(self) -> None:
        if self._errors:
            error = self._errors[0]
            if isinstance(error, DatabaseUnavailable):  # the run was connected: the server left
                raise ServerGone(
                    error.where,
                    f"cannot connect again: {error.reason}",
                    outcome=f"{self.target.display} was not changed",
                ) from error
            if isinstance(error, IngestError):
                raise error
            fault = server_fault(error, self.url, f"{self.target.display} was not changed")
            if fault is not None:
                raise fault from error
            raise IngestError(f"loading {self.target.display} failed: {error}") from error

    def _next(self) -> object:
        """The next batch for a worker; raises _Cancelled once the run is being abandoned."""
        while True:
            if self._stop.is_set():
                raise _Cancelled
            try:
                return self._queue.get(timeout=0.2)
            except queue.Empty:
                continue

    def _stop_workers(self) -> None:
        """Abandon the run: every worker aborts its COPY (rolling it back) and exits."""
        self._stop.set()
        self._drain()
        for thread in self._threads:
            thread.join()
        if self._sender is not None:
            self._sender.join()
        self._release()

    def close(self) -> pg_staging.Staged:
        """Wait for the workers to send every queued batch; what is staged goes to the commit.

        Raises:
            IngestError: a worker failed (the server refused a value, or went away).
        """
        for _ in self._threads:
            self._put(_DONE)
        for thread in self._threads:
            thread.join()
        if self._sender is not None:
            self._sender.join()
        self._raise_worker_error()
        held, self._held = self._held, None
        return pg_staging.Staged(
            self.staging, held, self.direct, self.progress.rows, self.started_at, self.run_id
        )


class _Cancelled(Exception):
    """A worker stopped because another one failed."""
