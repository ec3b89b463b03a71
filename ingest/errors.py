"""Errors the pipeline raises for expected conditions, each with a message a user can act on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class IngestError(Exception):
    """Base for every expected failure; tasks.py turns it into an exit message, not a traceback."""


class ConfigError(IngestError):
    """A config file is missing, unreadable, or has a wrong or unknown key."""

    def __init__(self, path: Path | str, problems: Sequence[str]) -> None:
        self.path = Path(path)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid config {self.path}:\n{lines}")


class SourceFileError(IngestError):
    """An input file cannot be read: missing, empty, malformed, or of an unknown format."""

    def __init__(self, path: Path | str, reason: str, fix: str = "") -> None:
        self.path = Path(path)
        self.reason = reason
        self.fix = fix
        message = f"cannot read {self.path}: {reason}"
        super().__init__(f"{message}\n  fix: {fix}" if fix else message)


class BadColumnName(IngestError):
    """A column name cannot become a PostgreSQL identifier as it is."""

    def __init__(self, path: Path | str, column: str, reason: str) -> None:
        self.path = Path(path)
        self.column = column
        self.reason = reason
        super().__init__(
            f"{self.path}: column {column!r} {reason}; rename it in the file "
            "or map it with schema_config.rename"
        )


class CastError(IngestError):
    """A column's values do not fit the type the config asks for."""

    def __init__(self, path: Path | str, column: str, target: str, examples: Sequence[str]) -> None:
        self.path = Path(path)
        self.column = column
        self.target = target
        self.examples = list(examples)
        shown = ", ".join(repr(e) for e in self.examples[:5])
        super().__init__(
            f"{self.path}: column {column!r} cannot be cast to {target} (e.g. {shown}); "
            f"fix the data or change schema_config.data_type[{column!r}]"
        )


class ValidationFailed(IngestError):
    """Rows broke the validation checks and the load was refused."""

    def __init__(self, path: Path | str, failures: int, summary: str) -> None:
        self.path = Path(path)
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
    """An append found the target's columns differ from the file's."""

    def __init__(self, table: str, missing: Sequence[str], extra: Sequence[str]) -> None:
        self.table = table
        self.missing = list(missing)
        self.extra = list(extra)
        super().__init__(
            f"cannot append to {table}: the file lacks columns {self.missing} and adds "
            f"{self.extra}; nothing was changed. Use if_table_exists 'replace', or align the file."
        )


class DatabaseUnavailable(IngestError):
    """The database cannot be reached; the message names host and port, not the password."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(
            f"cannot connect to PostgreSQL at {where}: {reason}\n"
            "  fix: check DATABASE_URL (or database.url), or unset it to use the embedded server "
            "(`invoke db.up`)"
        )


class EmbeddedServerError(IngestError):
    """The embedded PostgreSQL server could not be set up, started or stopped."""


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
        self, path: Path | str, bad_rows: int, limit: str, examples: Sequence[str], quarantine: str
    ) -> None:
        self.path = Path(path)
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


class SchemaDrift(IngestError):
    """The file's columns differ from the schema recorded by the last run (`on_drift: fail`)."""

    def __init__(self, source: str, table: str, changes: Sequence[str]) -> None:
        self.source = source
        self.table = table
        self.changes = list(changes)
        listed = "\n".join(f"  - {c}" for c in self.changes)
        super().__init__(
            f"source {source!r}: the schema of {table} drifted; nothing was changed:\n{listed}\n"
            "  fix: set on_drift: evolve (adds columns, widens types) or warn, or fix the file"
        )


class TableBusy(IngestError):
    """Another run holds the lock on the same table for longer than we wait."""

    def __init__(self, table: str, waited: float) -> None:
        self.table = table
        self.waited = waited
        super().__init__(
            f"another run is loading {table}; gave up after waiting {waited:.0f} s. "
            "Try again when it finishes (see `invoke runs`)."
        )


class ValueRefused(IngestError):
    """PostgreSQL refused a value in the middle of the COPY (e.g. a NUL byte in text)."""

    def __init__(
        self, path: Path | str, where: str, column: str | None, reason: str, table: str
    ) -> None:
        self.path = Path(path)
        self.where = where
        self.column = column
        self.reason = reason
        spot = f"{where}, column {column!r}" if column else where
        super().__init__(
            f"{self.path}: {spot}: PostgreSQL refused the value ({reason}); {table} was not "
            "changed\n  fix: correct or remove that value in the file, then load it again"
        )


class ServerFault(IngestError):
    """The server, not a value in the file, stopped the run (out of disk, memory, connections)."""

    def __init__(self, where: str, condition: str, reason: str, outcome: str, fix: str) -> None:
        self.where = where
        self.condition = condition
        self.reason = reason
        self.outcome = outcome
        self.fix = fix
        super().__init__(self._message())

    def _message(self) -> str:
        return (
            f"the server at {self.where} {self.condition} ({self.reason}); {self.outcome}\n"
            f"  fix: {self.fix}"
        )


class ServerGone(ServerFault):
    """The connection to the server was lost: it stopped or restarted, or a backend was ended."""

    def __init__(
        self,
        where: str,
        reason: str,
        *,
        moment: str = "during the load",
        outcome: str = "nothing was changed",
    ) -> None:
        self.moment = moment
        super().__init__(where, f"went away {moment}", reason, outcome, "run again")

    def _message(self) -> str:
        where, reason = self.where, self.reason
        return f"the server at {where} {self.condition} ({reason}); {self.outcome}; run again"


class CommitUnknown(IngestError):
    """The connection was lost as the commit was sent, and the server could not be asked after."""

    def __init__(self, where: str, table: str, reason: str, check: str, marker: str) -> None:
        self.where = where
        self.table = table
        self.reason = reason
        self.check = check
        self.marker = marker
        super().__init__(
            f"the server at {where} went away as the commit of {table} was sent ({reason}), and "
            f"asking it afterwards whether the commit went through failed ({check})\n"
            f"  fix: when the server is back, look for {marker}; running again is safe "
            "(a file whose commit went through is skipped, unless --force)"
        )
