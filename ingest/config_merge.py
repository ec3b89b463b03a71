"""Config of keyed loads: the primary key, how a merge treats it, and the incremental cursor."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MergeStrategy = Literal["upsert", "delete-insert", "insert-only", "scd2"]
OnDuplicate = Literal["quarantine", "fail"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MergeConfig(_Model):
    """How `if_table_exists: merge` combines the load's rows with the table's, key by key."""

    strategy: MergeStrategy = Field(
        "upsert", description="upsert, delete-insert, insert-only or scd2 (see README, Merge)."
    )
    dedup_sort: dict[str, Literal["asc", "desc"]] = Field(
        default_factory=dict,
        description="Column to asc/desc: which of a key's rows in the load wins (the first)."
        " Ties, and no dedup_sort, keep the key's last row in the file.",
    )
    on_duplicate: OnDuplicate = Field(
        "quarantine",
        description="A key's losing rows: quarantine them (rule duplicate_key), or fail.",
    )
    hard_delete: str | None = Field(
        None, description="Boolean column: a row with true there deletes its key from the table."
    )
    valid_from: str = Field("_valid_from", description="scd2: when a version became current.")
    valid_to: str = Field("_valid_to", description="scd2: when it stopped being (NULL: current).")
    retire_absent: bool = Field(
        False, description="scd2: the load is complete; retire current keys absent from it."
    )


class IncrementalConfig(_Model):
    """Skip rows that an earlier run already loaded, by a column that only grows."""

    cursor: str = Field(
        description="Rows whose value here is at or below the table's high-water mark are skipped."
    )


class Keyed(_Model):
    """The keyed-load settings of a source, checked together with `if_table_exists`."""

    if_table_exists: Literal["fail", "append", "replace", "merge"] = Field(
        "fail", description="fail, append, replace, or merge (needs primary_key)."
    )
    primary_key: list[str] | None = Field(
        None, min_length=1, description="Columns that identify a row; required by merge."
    )
    merge: MergeConfig | None = Field(None, description="How a merge treats keys (merge only).")
    incremental: IncrementalConfig | None = Field(
        None, description="Skip rows at or below the last run's cursor (append and merge)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Keyed:
        problem = keyed_problem(
            self.if_table_exists, self.primary_key, self.merge, self.incremental
        )
        if problem:
            raise ValueError(problem)
        return self


def keyed_problem(
    if_exists: str,
    primary_key: list[str] | None,
    merge: MergeConfig | None,
    incremental: IncrementalConfig | None,
) -> str | None:
    """What is wrong with a combination of keyed settings, as one line, or None."""
    if if_exists == "merge" and not primary_key:
        return "if_table_exists: merge needs primary_key: [the columns that identify a row]"
    if primary_key and len(set(primary_key)) != len(primary_key):
        return f"primary_key {primary_key} names a column twice"
    if merge is not None and if_exists != "merge":
        return f"merge: settings apply to if_table_exists: merge, not {if_exists}"
    if incremental is not None and if_exists not in ("append", "merge"):
        return f"incremental: works with if_table_exists append or merge, not {if_exists}"
    if merge is not None and primary_key:
        if merge.hard_delete in primary_key:
            return f"merge.hard_delete {merge.hard_delete!r} is a primary_key column"
        scd = {merge.valid_from, merge.valid_to}
        if merge.strategy == "scd2" and (len(scd) != 2 or scd & set(primary_key)):
            return "merge.valid_from and valid_to must be two names outside primary_key"
        if merge.retire_absent and merge.strategy != "scd2":
            return "merge.retire_absent applies to strategy: scd2"
    return None
