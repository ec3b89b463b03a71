"""Errors of keyed loads (merge, incremental), each naming the table or file and the fix."""

from __future__ import annotations

from collections.abc import Sequence

from ingest.errors import IngestError


def _names(columns: Sequence[str]) -> str:
    return ", ".join('"' + c.replace('"', '""') + '"' for c in columns)


class MergeKeyMissing(IngestError):
    """A merge's target has no unique index on exactly the primary key's columns."""

    def __init__(self, table: str, keys: Sequence[str], where: str | None = None) -> None:
        self.table = table
        self.keys = list(keys)
        self.where = where
        predicate = f" where {where}" if where else ""
        what = f"unique index on ({_names(self.keys)}){predicate}"
        super().__init__(
            f"{table} has no {what}, which a merge needs to find each key's row; nothing was"
            f" loaded. fix: create unique index on {table} ({_names(self.keys)}){predicate};"
            " or check primary_key in the config"
        )


class MergeColumnMissing(IngestError):
    """A merge's target lacks a column the merge needs (a key, or scd2's validity columns)."""

    def __init__(self, table: str, columns: Sequence[str], fix: str) -> None:
        self.table = table
        self.columns = list(columns)
        self.column = self.columns[0]
        super().__init__(
            f"{table} has no column {_names(self.columns)}, which the merge needs; nothing was"
            f" loaded. fix: {fix}"
        )


class DuplicateKeys(IngestError):
    """The load holds a key more than once and `merge.on_duplicate` is `fail`."""

    def __init__(self, file: str, table: str, count: int, example: str) -> None:
        self.file = file
        self.table = table
        self.count = count
        self.example = example
        super().__init__(
            f"{file}: {count:,} row(s) repeat a key already in the load ({example});"
            f" {table} was not changed. fix: remove the duplicates, or set"
            " merge.on_duplicate: quarantine (merge.dedup_sort picks the row that is kept)"
        )
