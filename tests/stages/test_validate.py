"""Bad rows become reject records: failed casts, every check kind, unique across batches, limits."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import numpy as np
import pandera.errors
import polars as pl
import pytest

from ingest.config import ColumnChecks, ValidationConfig
from ingest.stages.cast import CastPlan, cast_with_rejects
from ingest.stages.csvread import ROW, numbered
from ingest.stages.rejects import REJECTS_SCHEMA
from ingest.stages.unique import SeenValues
from ingest.stages.validate import build_checks_schema, over_limit, split_batch

NO_CASTS = CastPlan(types={}, date_formats={}, round_floats=None)


def batch(data: dict[str, list[Any]], start: int = 0, **schema: pl.DataType) -> pl.DataFrame:
    """A batch as the reader yields it: the columns plus `__row` from `start`."""
    frame = pl.DataFrame(data, schema=schema or None)
    return frame.with_row_index(ROW, offset=start)


def read_schema(frame: pl.DataFrame) -> dict[str, pl.DataType]:
    return {name: dtype for name, dtype in frame.schema.items() if name != ROW}


def split(
    frame: pl.DataFrame,
    checks: dict[str, ColumnChecks],
    plan: CastPlan = NO_CASTS,
    seen: SeenValues | None = None,
    **validation: Any,
) -> Any:
    config = ValidationConfig(checks=checks, sample_size=1, **validation)
    return split_batch(frame, plan, read_schema(frame), config, seed=0, seen=seen)


def test_cast_with_rejects_reports_each_failed_cell() -> None:
    """A bad int, date and decimal become null plus a reject; a null input is not a reject."""
    frame = batch(
        {
            "age": ["41", "forty", None, "7"],
            "born": ["2024-01-31", "2024-01-02", "2024-02-30", None],
            "pay": ["1.50", "2.25", "3", "abc"],
        }
    )
    plan = CastPlan(
        types={"age": pl.Int64(), "born": pl.Date(), "pay": pl.Decimal(10, 2)},
        date_formats={"born": "%Y-%m-%d"},
        round_floats=None,
    )
    cast, rejects = cast_with_rejects(frame, plan, read_schema(frame))
    assert cast.height == 4
    assert cast["age"].to_list() == [41, None, None, 7]
    assert cast["born"].to_list() == [dt.date(2024, 1, 31), dt.date(2024, 1, 2), None, None]
    assert cast["pay"].to_list() == [Decimal("1.50"), Decimal("2.25"), Decimal("3.00"), None]
    assert rejects.schema == REJECTS_SCHEMA
    assert rejects.select(ROW, "column", "rule", "reason").rows() == [
        (1, "age", "cast", "'forty' is not int64"),
        (2, "born", "cast", "'2024-02-30' is not date (%Y-%m-%d)"),
        (3, "pay", "cast", "'abc' is not decimal(10,2)"),
    ]
    assert json.loads(rejects["raw"][0]) == {"age": "forty", "born": "2024-01-02", "pay": "2.25"}


def test_cast_with_rejects_parses_dates_without_a_format() -> None:
    """A declared date or datetime on a text column parses; an unparsable value is a reject."""
    frame = batch({"d": ["2024-01-02", "soon"], "t": ["2024-01-02 03:04:05", "later"]})
    plan = CastPlan(
        types={"d": pl.Date(), "t": pl.Datetime("us", "UTC")}, date_formats={}, round_floats=None
    )
    cast, rejects = cast_with_rejects(frame, plan, read_schema(frame))
    assert cast["d"].to_list() == [dt.date(2024, 1, 2), None]
    assert cast.schema["t"] == pl.Datetime("us", "UTC")
    assert rejects.select("column", "reason").rows() == [
        ("d", "'soon' is not date"),
        ("t", "'later' is not datetime[UTC]"),
    ]


def test_a_batch_read_as_text_parses_every_type() -> None:
    """Text batches (a CSV chunk re-read as text) parse booleans, times and numbers leniently."""
    frame = batch({"ok": ["TRUE", "false", "maybe"], "at": ["12:30:00", "noon", None]})
    plan = CastPlan(types={"ok": pl.Boolean(), "at": pl.Time()}, date_formats={}, round_floats=None)
    cast, rejects = cast_with_rejects(frame, plan, read_schema(frame))
    assert cast["ok"].to_list() == [True, False, None]
    assert cast["at"].to_list() == [dt.time(12, 30), None, None]
    assert rejects.select(ROW, "reason").rows() == [
        (1, "'noon' is not time"),
        (2, "'maybe' is not boolean"),
    ]


def test_a_text_chunk_is_parsed_back_to_the_profiled_types() -> None:
    """A chunk re-read as text gets the profiled types even for columns the plan does not cast."""
    frame = batch({"n": ["1", "two"], "x": ["1.5", "2"]})
    profiled: dict[str, pl.DataType] = {"n": pl.Int64(), "x": pl.Float64()}
    config = ValidationConfig(checks={"x": ColumnChecks(le=1.5)}, sample_size=1)
    outcome = split_batch(frame, NO_CASTS, profiled, config, seed=0)
    assert outcome.good.schema == profiled
    assert outcome.good.rows() == [(1, 1.5)]
    assert outcome.rejects.select(ROW, "rule", "reason").rows() == [
        (1, "cast", "'two' is not int64"),
        (1, "le", "2.0 > 1.5"),
    ]


def test_cast_with_rejects_needs_row_numbers() -> None:
    """A batch without `__row` is refused with a message naming the column."""
    with pytest.raises(ValueError, match="row"):
        cast_with_rejects(pl.DataFrame({"a": [1]}), NO_CASTS, {"a": pl.Int64()})


@pytest.mark.parametrize(
    ("checks", "values", "bad_rows", "rule", "reason"),
    [
        (ColumnChecks(nullable=False), [1, None, 3], [1], "not_null", "null in a column"),
        (ColumnChecks(ge=0), [0, -3, 5], [1], "ge", "-3 < 0"),
        (ColumnChecks(gt=0), [0, 1, 2], [0], "gt", "0 <= 0"),
        (ColumnChecks(le=10), [10, 11, None], [1], "le", "11 > 10"),
        (ColumnChecks(lt=2.5), [1, 2, 3], [2], "lt", "3 >= 2.5"),
        (ColumnChecks(isin=[1, 2]), [1, 2, 7], [2], "isin", "'7' is not one of [1, 2]"),
        (ColumnChecks(notin=[7]), [7, 2, 7], [0, 2], "notin", "'7' is one of [7]"),
        (ColumnChecks(unique=True), [5, 6, 5, None, None], [2], "unique", "'5' repeats"),
    ],
)
def test_numeric_checks_reject_exactly_the_failing_rows(
    checks: ColumnChecks, values: list[int | None], bad_rows: list[int], rule: str, reason: str
) -> None:
    """Each numeric check kind rejects the rows that break it, with its rule and reason."""
    outcome = split(batch({"n": values}, n=pl.Int64()), {"n": checks})
    assert outcome.rejects[ROW].to_list() == bad_rows
    assert set(outcome.rejects["rule"]) == {rule}
    assert outcome.rejects["reason"][0].startswith(reason)
    assert outcome.good.height == len(values) - len(bad_rows)
    assert "__row" not in outcome.good.columns


@pytest.mark.parametrize(
    ("checks", "bad_rows", "rule", "reason"),
    [
        (ColumnChecks(isin=["ab", "abc"]), [0, 3], "isin", "'a' is not one of ['ab', 'abc']"),
        (ColumnChecks(notin=["ab"]), [1], "notin", "'ab' is one of ['ab']"),
        (ColumnChecks(str_length=(2, 3)), [0, 3], "str_length", "'a' length not in 2..3"),
        (ColumnChecks(str_length=(None, 2)), [2, 3], "str_length", "'abc' length not in 0..2"),
        (ColumnChecks(str_matches=r"ab"), [0, 3], "str_matches", "'a' does not match 'ab'"),
    ],
)
def test_string_checks_reject_exactly_the_failing_rows(
    checks: ColumnChecks, bad_rows: list[int], rule: str, reason: str
) -> None:
    """Each string check kind rejects the rows that break it; nulls pass when nullable."""
    outcome = split(batch({"s": ["a", "ab", "abc", "xyzw", None]}), {"s": checks})
    assert outcome.rejects[ROW].to_list() == bad_rows
    assert set(outcome.rejects["rule"]) == {rule}
    assert outcome.rejects["reason"][0] == reason


def test_a_row_with_several_failures_counts_once() -> None:
    """Every failure is a reject record, but the row counts once and is not loaded."""
    frame = batch({"age": ["-3", "20", "x"], "name": ["", "bo", "al"]})
    plan = CastPlan(types={"age": pl.Int64()}, date_formats={}, round_floats=None)
    checks = {
        "age": ColumnChecks(ge=0, nullable=False),
        "name": ColumnChecks(str_length=(1, None)),
    }
    outcome = split(frame, checks, plan)
    assert outcome.rejects.select(ROW, "rule").rows() == [
        (0, "ge"),
        (0, "str_length"),
        (2, "cast"),
    ]
    assert outcome.bad_rows == 2
    assert outcome.good.rows() == [(20, "bo")]
    assert outcome.good.schema == {"age": pl.Int64(), "name": pl.String()}


def test_unique_holds_across_batches() -> None:
    """A value kept in one batch makes its repeat in the next a reject; the first one stays."""
    seen = SeenValues(expected_rows=10)
    checks = {"id": ColumnChecks(unique=True)}
    first = split(batch({"id": [1, 2, 3]}), checks, seen=seen)
    second = split(batch({"id": [4, 2, 5, 4]}, start=3), checks, seen=seen)
    assert first.bad_rows == 0
    assert second.rejects[ROW].to_list() == [4, 6]
    assert second.good["id"].to_list() == [4, 5]
    assert second.checked_rows["id.unique"] == 4


def test_a_rejected_row_does_not_claim_its_unique_value() -> None:
    """A row rejected for another reason leaves its value free for a later good row."""
    seen = SeenValues()
    checks = {"id": ColumnChecks(unique=True), "n": ColumnChecks(ge=0)}
    first = split(batch({"id": [1, 2], "n": [-1, 1]}), checks, seen=seen)
    second = split(batch({"id": [1], "n": [5]}, start=2), checks, seen=seen)
    assert first.rejects.select(ROW, "rule").rows() == [(0, "ge")]
    assert second.bad_rows == 0


def test_two_unique_columns_add_only_kept_rows() -> None:
    """With two unique columns, a row repeating in one does not claim its value of the other."""
    seen = SeenValues()
    checks = {"a": ColumnChecks(unique=True), "b": ColumnChecks(unique=True)}
    first = split(batch({"a": [1, 1], "b": [10, 20]}), checks, seen=seen)
    second = split(batch({"a": [3, 4], "b": [20, 10]}, start=2), checks, seen=seen)
    assert first.rejects.select(ROW, "column").rows() == [(1, "a")]
    assert second.rejects.select(ROW, "column").rows() == [(3, "b")]


def test_seen_values_grow_beyond_the_expected_rows() -> None:
    """Growing the hash set keeps every value: all of them are found again afterwards."""
    seen = SeenValues(expected_rows=1)
    hashes = pl.Series(np.arange(50_000)).hash(seed=0).to_numpy()
    assert not seen.add("c", hashes[:30_000]).any()
    present = seen.add("c", hashes[20_000:])
    assert present.sum() == 10_000
    assert seen.contains("c", hashes).all()
    assert not seen.contains("other", hashes).any()
    assert seen.nbytes >= 50_000 / 0.7 * 8


def test_regex_runs_on_a_sample_and_reports_the_depth() -> None:
    """str_matches sees sample_size of the rows; the cheap checks see them all."""
    frame = batch({"s": ["ok"] * 1000})
    checks = {"s": ColumnChecks(str_matches="ok", str_length=(1, 5))}
    config = ValidationConfig(checks=checks, sample_size=0.05)
    outcome = split_batch(frame, NO_CASTS, read_schema(frame), config, seed=1)
    assert outcome.checked_rows == {"cast": 1000, "s.str_length": 1000, "s.str_matches": 50}
    assert outcome.good.height == 1000


def test_a_cast_failure_is_not_reported_again_as_null() -> None:
    """A value that failed its cast is one reject (cast), not a second one (not_null)."""
    frame = batch({"n": ["x", None]})
    plan = CastPlan(types={"n": pl.Int64()}, date_formats={}, round_floats=None)
    outcome = split(frame, {"n": ColumnChecks(nullable=False)}, plan)
    assert outcome.rejects.select(ROW, "rule").rows() == [(0, "cast"), (1, "not_null")]


def test_a_batch_with_nothing_to_cast_keeps_its_values_in_schema_order() -> None:
    """The reader's batch (Int64 row numbers last) skips the casts only when none applies."""
    frame = numbered(pl.DataFrame({"b": ["x", None, "z"], "a": [1.26, 2.0, None]}), 10)
    outcome = split(frame, {})
    assert outcome.good.columns == ["b", "a"]
    assert outcome.good.rows() == [("x", 1.26), (None, 2.0), ("z", None)]
    assert outcome.rows.to_list() == [10, 11, 12]
    rounded = split(frame, {}, CastPlan(types={}, date_formats={}, round_floats=1))
    assert rounded.good["a"].to_list() == [1.3, 2.0, None]
    refused = split(frame, {"b": ColumnChecks(nullable=False)})
    assert refused.rows.to_list() == [10, 12]
    assert refused.rejects.select(ROW, "rule").rows() == [(11, "not_null")]


def test_build_checks_schema_is_a_pandera_schema_of_every_check() -> None:
    """The full schema checks types, nulls, values and uniqueness with Pandera."""
    schema = build_checks_schema(
        {"id": pl.Int64(), "s": pl.String()},
        {"id": ColumnChecks(unique=True, ge=1), "s": ColumnChecks(str_matches="a")},
    )
    frame = pl.DataFrame({"id": [1, 1, 0], "s": ["a", "b", "a"]})
    with pytest.raises(pandera.errors.SchemaErrors) as caught:
        schema.validate(frame, lazy=True)
    cases = caught.value.failure_cases.select("column", "index").sort("column", "index").rows()
    assert cases == [("id", 0), ("id", 1), ("id", 2), ("s", 1)]


def test_checks_on_an_unknown_column_are_refused() -> None:
    """A check naming a column the file lacks is an error listing it."""
    with pytest.raises(ValueError, match="'nope'"):
        build_checks_schema({"a": pl.Int64()}, {"nope": ColumnChecks(ge=0)})


@pytest.mark.parametrize(
    ("bad", "total", "settings", "expected"),
    [
        (0, 100, {}, None),
        (1, 100, {}, "max_bad_rows=0"),
        (5, 100, {"max_bad_rows": 5}, None),
        (6, 100, {"max_bad_rows": 5}, "max_bad_rows=5"),
        (1, 100, {"max_bad_fraction": 0.01}, None),
        (2, 100, {"max_bad_fraction": 0.01}, "max_bad_fraction=0.01"),
        (3, 100, {"max_bad_fraction": 0.05, "max_bad_rows": 2}, "max_bad_rows=2"),
        (3, 100, {"max_bad_fraction": 0.01, "max_bad_rows": 10}, "max_bad_fraction=0.01"),
        (0, 0, {"max_bad_fraction": 0.0}, None),
    ],
)
def test_over_limit_arithmetic(
    bad: int, total: int, settings: dict[str, Any], expected: str | None
) -> None:
    """The limit is the count, the fraction, or both when both are set."""
    assert over_limit(bad, total, ValidationConfig.model_validate(settings)) == expected


def test_text_with_an_offset_casts_to_a_naive_timestamp() -> None:
    """`data_type: timestamp` on "...Z" text gives the UTC wall time, not a bad row."""

    batch = pl.DataFrame({"t": ["2013-01-01T06:00:00Z", "2013-01-01T07:00:00Z"], ROW: [0, 1]})
    plan = CastPlan(types={"t": pl.Datetime("us")}, date_formats={}, round_floats=None)
    out, rejects = cast_with_rejects(batch, plan, {"t": pl.String()})
    assert rejects.height == 0
    assert out["t"].to_list() == [dt.datetime(2013, 1, 1, 6), dt.datetime(2013, 1, 1, 7)]


def two_reads(first: dict[str, list[Any]], second: dict[str, list[Any]]) -> pl.DataFrame:
    """A batch joined from two reads without rechunking, as the CSV reader yields it."""
    joined = pl.concat([pl.DataFrame(first), pl.DataFrame(second)], rechunk=False)
    return joined.with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64))


def test_unique_repeats_only_in_the_second_read_are_rejected() -> None:
    """Repeats that all lie in a batch's second chunk become rejects (this used to panic)."""
    frame = two_reads({"id": [140001, 140002, 140003]}, {"id": [42, 140004, 42, 42]})
    assert frame["id"].n_chunks() == 2
    outcome = split(frame, {"id": ColumnChecks(unique=True)})
    assert outcome.rejects.select(ROW, "reason").rows() == [
        (5, "'42' repeats an earlier row"),
        (6, "'42' repeats an earlier row"),
    ]
    assert outcome.good["id"].to_list() == [140001, 140002, 140003, 42, 140004]


def test_failed_casts_only_in_the_second_read_are_rejected() -> None:
    """Cells that fail to cast only in a batch's second chunk become rejects, not a panic."""
    frame = two_reads({"n": ["1", "2", "3"]}, {"n": ["x", "y", "z", "4", "5", "6"]})
    plan = CastPlan(types={"n": pl.Int64()}, date_formats={}, round_floats=None)
    _, rejects = cast_with_rejects(frame, plan, read_schema(frame))
    assert rejects.select(ROW, "reason").rows() == [
        (3, "'x' is not int64"),
        (4, "'y' is not int64"),
        (5, "'z' is not int64"),
    ]
