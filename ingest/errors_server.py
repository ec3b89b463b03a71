"""Errors of the database server: unreachable, busy, faulted or gone mid-load, a commit unknown.

Each names the server (host and port, never the password) and what the user can do; the other
errors (of files, configs, values, tables, dbt) are in `ingest.errors`.
"""

from __future__ import annotations

from ingest.errors import IngestError


class DatabaseUnavailable(IngestError):
    """The database cannot be reached; the message names host and port, not the password."""

    def __init__(self, where: str, reason: str, fix: str = "") -> None:
        self.where = where
        self.reason = reason
        self.fix = fix or (
            "check DATABASE_URL (or database.url), or unset it to use the embedded server"
        )
        super().__init__(f"cannot connect to PostgreSQL at {where}: {reason}; fix: {self.fix}")


class EmbeddedServerError(IngestError):
    """The embedded PostgreSQL server could not be set up, started or stopped."""


class TableBusy(IngestError):
    """Another run holds the lock on the same table for longer than we wait."""

    def __init__(self, table: str, waited: float) -> None:
        self.table = table
        self.waited = waited
        super().__init__(
            f"another run is loading {table}; gave up after waiting {waited:.0f} s. "
            "Try again when it finishes (see `invoke runs`)."
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
