"""Errors the pipeline raises for expected conditions, each with a message a user can act on."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol


class Remote(Protocol):
    """A remote object (`ingest.stages.remote.RemoteFile`): shown by its URL, never a `Path`."""

    @property
    def name(self) -> str: ...

    @property
    def display(self) -> str: ...


# Where an input is: a local file, or a remote object. A URL string stays a string: `Path`
# would turn `s3://bucket/key` into `s3:/bucket/key`.
Where = Path | Remote
Place = Path | str | Remote


def _where(path: Place) -> Where:
    if isinstance(path, str) and "://" in path:
        return _Url(path)
    return Path(path) if isinstance(path, str | Path) else path


class _Url:
    """A URL given where a path is expected (a glob that matched nothing, say)."""

    def __init__(self, url: str) -> None:
        self.display = url
        self.name = url.rstrip("/").rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return self.display


class IngestError(Exception):
    """Base for every expected failure; tasks.py turns it into an exit message, not a traceback."""

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled back from a Dask worker without calling `__init__`, whose arguments differ
        # from the one message `args` keeps.
        return (_restore, (type(self), self.args, self.__dict__))


def _restore(cls: type[IngestError], args: tuple[object, ...], state: dict[str, object]) -> object:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class ConfigError(IngestError):
    """A config file is missing, unreadable, or has a wrong or unknown key."""

    def __init__(self, path: Place, problems: Sequence[str]) -> None:
        self.path = _where(path)
        self.problems = list(problems)
        if len(self.problems) == 1:  # the usual case: one line, file and key and what to do
            super().__init__(f"invalid config {self.path}: {self.problems[0]}")
            return
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid config {self.path}:\n{lines}")


class SourceFileError(IngestError):
    """An input file cannot be read: missing, empty, malformed, or of an unknown format."""

    def __init__(self, path: Place, reason: str, fix: str = "") -> None:
        self.path = _where(path)
        self.reason = reason
        self.fix = fix
        message = f"cannot read {self.path}: {reason}"
        super().__init__(f"{message}\n  fix: {fix}" if fix else message)


class RemoteSourceError(SourceFileError):
    """An object or web file cannot be reached or read: missing, refused, or a dropped link."""

    def __init__(self, url: str, reason: str, fix: str, secrets: Sequence[str] = ()) -> None:
        for secret in sorted((s for s in secrets if s), key=len, reverse=True):
            reason = reason.replace(secret, "***")
        self.url = url
        super().__init__(url, reason, fix)


class DamagedParquet(SourceFileError):
    """A Parquet row group cannot be decoded: a corrupt page, a failed decompression."""

    def __init__(self, path: Place, row_group: int, groups: int, cause: Exception) -> None:
        self.row_group = row_group
        super().__init__(
            path,
            f"row group {row_group} (of {groups}, counted from 0) is damaged: {cause}",
            "export or copy the file again; nothing from it was loaded",
        )


class DamagedArchive(SourceFileError):
    """A compressed file ends early or its compressed data is corrupt, partway through."""

    def __init__(
        self,
        path: Path | str,
        compression: str,
        read_bytes: int,
        text_bytes: int,
        lines: int,
        cause: str,
    ) -> None:
        self.compression = compression
        self.read_bytes = read_bytes
        self.text_bytes = text_bytes
        self.lines = lines
        super().__init__(
            path,
            f"the {compression} data is damaged after {read_bytes:,} compressed bytes "
            f"({text_bytes:,} bytes, {lines:,} lines of text decompressed): {cause}",
            "copy or export the file again (a transfer that stopped early truncates it); "
            "nothing from it was loaded",
        )


_SEPARATOR_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}


class SeparatorMismatch(SourceFileError):
    """A CSV file is plainly separated by another character than the configured one."""

    def __init__(self, path: Place, configured: str, found: str, count: int, lines: int) -> None:
        self.configured = configured
        self.found = found
        said = _SEPARATOR_NAMES.get(configured, repr(configured))
        seen = _SEPARATOR_NAMES.get(found, repr(found))
        quoted = json.dumps(found)  # "\t" in double quotes, which YAML and TOML both read as a tab
        super().__init__(
            path,
            f"its first line has no {said} ({configured!r}), the separator in use, but each of "
            f"its first {lines} line(s) has {count} {seen}(s) ({found!r}): it is {seen}-separated",
            f"set csv.separator: {quoted} in the source (or set csv.separator: "
            f"{json.dumps(configured)} to read each line as one column)",
        )


class BadColumnName(IngestError):
    """A column name cannot become a PostgreSQL identifier as it is."""

    def __init__(self, path: Place, column: str, reason: str) -> None:
        self.path = _where(path)
        self.column = column
        self.reason = reason
        super().__init__(
            f"{self.path}: column {column!r} {reason}; nothing was loaded\n"
            "  fix: rename the column in the file (any name PostgreSQL takes will do: up to 63 "
            "bytes, no NUL)"
        )


class TooManyColumns(IngestError):
    """A file has more columns than a PostgreSQL table can hold."""

    def __init__(self, path: Place, columns: int, lineage: Sequence[str], limit: int) -> None:
        self.path = _where(path)
        self.columns = columns
        self.limit = limit
        added = (
            f" plus the {len(lineage)} lineage columns ({', '.join(lineage)})" if lineage else ""
        )
        super().__init__(
            f"{self.path}: {columns:,} columns{added} is more than PostgreSQL's limit of "
            f"{limit:,} columns in a table; nothing was loaded\n"
            f"  fix: split the file's columns over several tables, keeping at most "
            f"{limit - len(lineage):,} in each"
        )


class UnsupportedColumnType(IngestError):
    """A file's column has a type the loader cannot write to PostgreSQL."""

    def __init__(
        self, path: Place, column: str, type_name: str, why: str = "", fix: str = ""
    ) -> None:
        self.path = _where(path)
        self.column = column
        self.type_name = type_name
        self.fix = fix or (
            "cast the column in the file to a type that loads (e.g. text), or set "
            f"schema_config.data_type: {{{column!r}: string}}"
        )
        super().__init__(
            f"{self.path}: column {column!r} has type {type_name}, which cannot be loaded"
            + (f" ({why})" if why else "")
            + f"; nothing was loaded\n  fix: {self.fix}"
        )


class ValidationFailed(IngestError):
    """Rows broke the validation checks and the load was refused."""

    def __init__(self, path: Place, failures: int, summary: str) -> None:
        self.path = _where(path)
        self.failures = failures
        self.summary = summary
        super().__init__(
            f"{self.path}: {failures} check failure(s); nothing was loaded.\n{summary}"
        )


class TargetExists(IngestError):
    """`if_table_exists: fail` and the target table is already there."""

    def __init__(self, table: str) -> None:
        self.table = table
        super().__init__(
            f"table {table} already exists and if_table_exists is 'fail'; nothing was changed. "
            "Use 'append' or 'replace', or drop the table."
        )


class SchemaMismatch(IngestError):
    """An append found columns in the file that the target table lacks."""

    def __init__(self, table: str, path: Place, extra: Sequence[str]) -> None:
        self.table = table
        self.path = _where(path)
        self.extra = list(extra)
        super().__init__(
            f"{self.path}: cannot append to {table}, which has no column(s) {self.extra}; "
            "nothing from the file was loaded\n"
            "  fix: set on_drift: evolve to add them, or align the file's columns with the table's"
        )


class DbtFailed(IngestError):
    """A dbt command exited non-zero."""

    def __init__(self, command: str, target: str, returncode: int, tail: str = "") -> None:
        self.command = command
        self.target = target
        self.returncode = returncode
        super().__init__(
            f"`dbt {command}` on target {target!r} failed (exit {returncode})"
            + (f":\n{tail}" if tail else "")
        )


class BadRowsOverLimit(IngestError):
    """More rows failed parsing, casting or checks than the config tolerates."""

    def __init__(
        self, path: Place, bad_rows: int, limit: str, examples: Sequence[str], quarantine: str
    ) -> None:
        self.path = _where(path)
        self.bad_rows = bad_rows
        self.limit = limit
        self.examples = list(examples)
        self.quarantine = quarantine
        shown = "\n".join(f"  {e}" for e in self.examples)
        super().__init__(
            f"{self.path}: {bad_rows:,} bad row(s), over the limit ({limit}); the target table "
            f"was not changed. All bad rows are in {quarantine}. First ones:\n{shown}\n"
            "  fix: correct the data, or raise validation_data.max_bad_rows / max_bad_fraction"
        )


class RepeatedAcrossPartitions(IngestError):
    """A `unique` column's value is in more than one partition of the load."""

    def __init__(self, path: Place, column: str, values: Sequence[str], table: str) -> None:
        self.path = _where(path)
        self.column = column
        self.values = list(values)
        super().__init__(
            f"{self.path}: column {column!r} must be unique, but values repeat across the"
            f" load's partitions (e.g. {', '.join(self.values)}); {table} was not changed;"
            " fix: remove the repeats from the data, or drop unique from the column's check"
        )


class SchemaDrift(IngestError):
    """The file's columns differ from the schema recorded by the last run (`on_drift: fail`)."""

    def __init__(
        self,
        source: str,
        table: str,
        changes: Sequence[str],
        path: Place | None = None,
        fix: str | None = None,
    ) -> None:
        self.source = source
        self.table = table
        self.changes = list(changes)
        self.path = _where(path) if path is not None else None
        listed = "\n".join(f"  - {c}" for c in self.changes)
        where = f" in {self.path}" if self.path else ""
        file = f" {self.path.name}" if self.path else ""
        self.fix = fix or (
            f"set on_drift: evolve (adds columns, widens types) or warn, or fix the file{file}"
        )
        super().__init__(
            f"source {source!r}: the schema of {table} drifted{where}; nothing was changed:\n"
            f"{listed}\n  fix: {self.fix}"
        )


class ValueRefused(IngestError):
    """PostgreSQL refused a value in the middle of the COPY (e.g. a NUL byte in text)."""

    def __init__(
        self, path: Place, where: str, column: str | None, reason: str, table: str
    ) -> None:
        self.path = _where(path)
        self.where = where
        self.column = column
        self.reason = reason
        spot = f"{where}, column {column!r}" if column else where
        super().__init__(
            f"{self.path}: {spot}: PostgreSQL refused the value ({reason}); {table} was not "
            "changed\n  fix: correct or remove that value in the file, then load it again"
        )


class NotATable(IngestError):
    """The target's name belongs to a view, foreign table or other relation a load cannot fill."""

    def __init__(self, table: str, kind: str, fix: str, what: str = "a table") -> None:
        self.table = table
        self.kind = kind
        self.fix = fix
        super().__init__(f"{table} is a {kind}, not {what}; nothing was changed. fix: {fix}")


class RequiredColumnMissing(IngestError):
    """An append's target has a NOT NULL column without a default that the file does not bring."""

    def __init__(self, table: str, columns: Sequence[str]) -> None:
        self.table = table
        self.columns = list(columns)
        self.column = self.columns[0]
        names = ", ".join('"' + c.replace('"', '""') + '"' for c in self.columns)
        plural = "s" if len(self.columns) > 1 else ""
        super().__init__(
            f"{table} has column{plural} {names} NOT NULL without a default, which the file "
            "does not have; nothing was changed. fix: give it a default, drop NOT NULL, or add "
            f"the column{plural} to the file"
        )


class ConstraintBroken(IngestError):
    """A replace's new rows break a constraint or index the old table had (or was referenced by)."""

    def __init__(
        self, table: str, constraint: str, owner: str, definition: str, reason: str, fix: str
    ) -> None:
        self.table = table
        self.constraint = constraint
        self.owner = owner  # the table the constraint is defined on
        self.definition = definition
        self.reason = reason
        self.fix = fix
        on = "" if owner == table else f" of {owner}"
        super().__init__(
            f"the new rows for {table} break {constraint}{on} ({definition}): {reason}; "
            f"{table} was not changed.\n  fix: {fix}"
        )


class QueryFailed(IngestError):
    """DuckDB refused a query on the marts: a missing table, a column, the syntax."""

    def __init__(self, path: Place, reason: str, marts: Sequence[str]) -> None:
        self.path = _where(path)
        self.reason = reason
        self.marts = list(marts)
        shown = ", ".join(self.marts) if self.marts else "none yet (run `invoke build`)"
        super().__init__(f"query on {self.path} failed: {reason}\n  the marts are: {shown}")


class RunNotFound(IngestError):
    """No run in the ledger has the id a report asks for, or the ledger has no run yet."""

    def __init__(self, run_id: str | None, schema: str) -> None:
        self.run_id = run_id
        self.schema = schema
        what = f"no run (or more than one) has an id starting {run_id!r}" if run_id else "no run"
        super().__init__(
            f"{what} in {schema}.runs\n  fix: pass a run id that `invoke runs` shows, or --latest"
        )


class UsageError(IngestError):
    """A command was called with an option or argument it cannot use (exit code 2)."""
