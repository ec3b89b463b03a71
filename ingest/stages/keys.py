"""Keyed loads, decided before any row moves: which columns key a merge, and how it goes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from ingest.config import ColumnChecks, SourceConfig
from ingest.config_merge import MergeConfig
from ingest.errors import ConfigError
from ingest.stages.unique import SeenValues
from ingest.state.quarantine import quarantine_table, row_kind

if TYPE_CHECKING:
    from ingest.stages.remote import Location

# Each staged row's line (CSV) or row index (Parquet), kept to name a duplicate's losers. A
# name no file column is likely to have; `plan_merge` refuses a file that has it.
ROW_COLUMN = "__pgloadkit_row"
# Keys watched for repeats, at most: about 11.5 bytes each (SeenValues), so 115 MB. A bigger load
# is deduplicated in SQL whether or not a key repeats.
WATCHED_KEYS = 10_000_000


@dataclass(frozen=True)
class MergeSpec:
    """Everything the merge step needs, resolved from the config and the file's columns."""

    keys: tuple[str, ...]
    columns: tuple[str, ...]  # the load's columns, keys included, lineage excluded
    lineage: tuple[str, str]
    strategy: str
    dedup_sort: tuple[tuple[str, bool], ...]  # (column, descending)
    on_duplicate: str
    hard_delete: str | None
    valid_from: str
    valid_to: str
    retire_absent: bool
    # Where a duplicate's losers go and how they are named.
    quarantine: tuple[str, str]
    source_file: str
    row_kind: str
    run_id: str
    meta: str  # the ledger's schema, where the counts are recorded
    may_repeat: bool = True  # False once a KeyWatch saw every key once: no dedup pass

    @property
    def values(self) -> tuple[str, ...]:
        """The columns a merge compares and updates: the load's columns but the keys."""
        return tuple(c for c in self.columns if c not in self.keys)


def with_key_checks(source: SourceConfig) -> SourceConfig:
    """The source with `nullable: false` on every primary-key column: a NULL key is a bad row."""
    if not source.primary_key:
        return source
    checks = dict(source.validation_data.checks)
    for name in source.primary_key:
        current = checks.get(name)
        checks[name] = (
            current.model_copy(update={"nullable": False})
            if current is not None
            else ColumnChecks(nullable=False)
        )
    validation = source.validation_data.model_copy(update={"checks": checks})
    return source.model_copy(update={"validation_data": validation})


def plan_merge(
    config_path: Path,
    source: SourceConfig,
    output: dict[str, pl.DataType],
    *,
    lineage: tuple[str, str],
    file: Location,
    fmt: str,
    schema: str,
    run_id: str,
    meta: str,
) -> MergeSpec | None:
    """The merge of a source's file, or None when the source does not merge.

    Raises:
        ConfigError: a key, dedup_sort or hard_delete column the file lacks, a hard_delete
            column that is not boolean, or scd2 columns the file brings itself.
    """
    if source.if_table_exists != "merge":
        return None
    keys = tuple(source.primary_key or ())
    merge = source.merge or MergeConfig()
    have = ", ".join(output)
    problems = [
        f"{setting}: no column {name!r} in {file.name} (it has {have})"
        for setting, names in (
            ("primary_key", keys),
            ("merge.dedup_sort", tuple(merge.dedup_sort)),
            ("merge.hard_delete", (merge.hard_delete,) if merge.hard_delete else ()),
        )
        for name in names
        if name not in output
    ]
    hard = merge.hard_delete
    if hard is not None and hard in output and output[hard] != pl.Boolean():
        problems.append(
            f"merge.hard_delete: column {hard!r} of {file.name} is {output[hard]}, not boolean;"
            f" give it schema_config.data_type {{{hard}: bool}} or name a true/false column"
        )
    own = {ROW_COLUMN, *lineage}
    if merge.strategy == "scd2":
        own |= {merge.valid_from, merge.valid_to}
    clash = [name for name in output if name in own]
    if clash:
        problems.append(
            f"{file.name} has column(s) {', '.join(clash)}, which the merge adds itself;"
            " rename them in the file or set merge.valid_from / valid_to"
        )
    if problems:
        raise ConfigError(config_path, problems)
    return MergeSpec(
        keys=keys,
        columns=tuple(output),
        lineage=lineage,
        strategy=merge.strategy,
        dedup_sort=tuple((c, d == "desc") for c, d in merge.dedup_sort.items()),
        on_duplicate=merge.on_duplicate,
        hard_delete=hard,
        valid_from=merge.valid_from,
        valid_to=merge.valid_to,
        retire_absent=merge.retire_absent,
        quarantine=quarantine_table(schema, source.table_name),
        source_file=str(file),
        row_kind=row_kind(fmt),
        run_id=run_id,
        meta=meta,
    )


def staged_columns(
    output: dict[str, pl.DataType], spec: MergeSpec | None
) -> dict[str, pl.DataType]:
    """The staging table's columns: a merge also keeps each row's place in the file."""
    return output if spec is None else output | {ROW_COLUMN: pl.Int64()}


def numbered(
    good: pl.DataFrame, rows: np.ndarray, line_offset: int, spec: MergeSpec | None
) -> pl.DataFrame:
    """A merge's batch with each row's CSV line (index + offset) or Parquet row index."""
    if spec is None:
        return good
    where = rows + line_offset if spec.row_kind == "csv_line" else rows
    return good.with_columns(pl.Series(ROW_COLUMN, where, pl.Int64))


def dbt_key(table: str, spec: MergeSpec | None) -> dict[str, tuple[tuple[str, ...], str | None]]:
    """A merged table's key for its dbt source tests: the columns, and scd2's current rows."""
    if spec is None:
        return {}
    current = None
    if spec.strategy == "scd2":
        current = '"' + spec.valid_to.replace('"', '""') + '" is null'
    return {table: (spec.keys, current)}


def own_columns(lineage: tuple[str, ...], spec: MergeSpec | None) -> tuple[str, ...]:
    """Columns the pipeline adds to a table, not the file: lineage, and scd2's validity."""
    if spec is None or spec.strategy != "scd2":
        return lineage
    return (*lineage, spec.valid_from, spec.valid_to)


class KeyWatch:
    """Whether any key of a merge's load may repeat, from 64-bit hashes of the staged keys.

    Equal keys hash alike, so "no repeat" is certain and the merge skips its dedup pass (a sort
    of every staged row); a hash collision only makes it run that pass for nothing.
    """

    def __init__(self, spec: MergeSpec | None, expected_rows: int) -> None:
        self.keys = list(spec.keys) if spec is not None else []
        self.rows = 0
        self.repeated = False
        self._seen = SeenValues(min(expected_rows, WATCHED_KEYS)) if self.keys else None

    def see(self, good: pl.DataFrame) -> None:
        """Watch a batch's keys."""
        if self._seen is None or self.repeated:
            return
        self.rows += good.height
        if self.rows > WATCHED_KEYS:
            self.repeated, self._seen = True, None  # too many to watch: dedupe in SQL
            return
        hashes = good.select(pl.struct(self.keys).hash(seed=0x6B657973)).to_series().to_numpy()
        distinct = np.unique(hashes)
        if distinct.size < hashes.size or self._seen.add("key", distinct).any():
            self.repeated, self._seen = True, None
