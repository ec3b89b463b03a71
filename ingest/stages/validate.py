"""Find bad rows: failed casts and failed checks, as reject records, so the good rows still load.

Every batch carries `__row`, the 0-based index of the row in the source file. For a CSV file with
a header the 1-based source line is `__row + 2`, unless an earlier quoted field spans several
lines (each embedded newline shifts the real line down by one); `quarantine.write_rejects` turns
`__row` into that line.

Depth: casts, types, nulls, ranges, isin/notin and str_length run on every row (Pandera, about
50 ms per million rows); str_matches runs on a `sample_size` sample of each batch; unique runs on
every row against the hashes of all values kept earlier in the run (`SeenValues`). Types are a
property of the batch's schema: once Pandera has accepted a schema, batches with the same one
are not sent to it again unless a row rule applies.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import TYPE_CHECKING

import polars as pl

from ingest.config import ColumnChecks, ValidationConfig
from ingest.errors import Place, ValidationFailed
from ingest.stages.cast import CastPlan, cast_failures
from ingest.stages.csvread import ROW
from ingest.stages.rejects import NO_RAW, empty_rejects, quoted, with_raw
from ingest.stages.server_limits import refused_values
from ingest.stages.unique import SeenValues

if TYPE_CHECKING:  # pandera loads on the first check (see `ingest.runtime.memory.lean_imports`)
    import pandera.polars as pa


def _pandera() -> ModuleType:
    """pandera's polars API, imported on first use: a load without checks never needs it."""
    import pandera.polars

    return pandera.polars


CHEAP_RULES = frozenset({"ge", "gt", "le", "lt", "isin", "notin", "str_length"})
SAMPLED_RULES = frozenset({"str_matches"})
# Each bound rule and the operator that states its failure: ge 0 fails as "-3 < 0".
_BOUNDS = (("ge", "<"), ("gt", "<="), ("le", ">"), ("lt", ">="))


@dataclass(frozen=True)
class BatchOutcome:
    """A batch split into the rows to load and the reasons the others were rejected."""

    good: pl.DataFrame
    rows: pl.Series  # each good row's 0-based index in the file
    rejects: pl.DataFrame
    checked_rows: dict[str, int] = field(default_factory=dict)

    @property
    def bad_rows(self) -> int:
        """Rows rejected, each counted once however many checks it failed."""
        return self.rejects[ROW].n_unique() if self.rejects.height else 0

    def with_rejects(self, rejects: pl.DataFrame | None) -> BatchOutcome:
        """This outcome with rows set aside before it (e.g. ragged CSV rows) among its rejects."""
        if rejects is None or rejects.height == 0:
            return self
        both = pl.concat([self.rejects, rejects.select(self.rejects.columns)])
        return replace(self, rejects=both.sort(ROW, maintain_order=True))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _shown(values: Sequence[str | int | float]) -> str:
    text = repr(values)
    return text if len(text) <= 80 else text[:77] + "...]"


def _rules(checks: ColumnChecks, dtype: pl.DataType) -> list[tuple[str, pa.Check, str, str]]:
    """A column's checks in a fixed order: rule, Pandera check, reason before and after value."""
    check = _pandera().Check
    out: list[tuple[str, pa.Check, str, str]] = []
    for rule, op in _BOUNDS:
        bound = getattr(checks, rule)
        if bound is not None:
            out.append((rule, getattr(check, rule)(bound), "", f" {op} {_number(bound)}"))
    text = dtype == pl.String()
    if checks.isin is not None:
        allowed: list[str | int | float] = [str(v) for v in checks.isin] if text else checks.isin
        out.append(("isin", check.isin(allowed), "'", f"' is not one of {_shown(allowed)}"))
    if checks.notin is not None:
        banned: list[str | int | float] = [str(v) for v in checks.notin] if text else checks.notin
        out.append(("notin", check.notin(banned), "'", f"' is one of {_shown(banned)}"))
    low, high = checks.str_length or (None, None)
    if low is not None or high is not None:
        span = f"{low or 0}..{high if high is not None else ''}"
        out.append(("str_length", check.str_length(low, high), "'", f"' length not in {span}"))
    if checks.str_matches is not None:
        regex = checks.str_matches
        out.append(("str_matches", check.str_matches(regex), "'", f"' does not match {regex!r}"))
    return out


# Schemas built per run, not per batch: building one costs ~0.4 ms, a 244M-row load has ~9000
# batches. Keyed by the checks' identity, which the entry keeps alive so the id stays unique.
_SCHEMAS: dict[tuple[object, ...], tuple[object, tuple[pa.DataFrameSchema, pl.DataFrame]]] = {}
_SCHEMAS_KEPT = 16
# Frame schemas (with the Pandera schema that passed them) a types-only check has accepted.
_TYPES_PASSED: dict[tuple[object, ...], pa.DataFrameSchema] = {}


def _schema(
    columns: dict[str, pl.DataType],
    checks: dict[str, ColumnChecks],
    rules: frozenset[str],
    *,
    nulls: bool,
    unique: bool,
    only: bool = False,
) -> tuple[pa.DataFrameSchema, pl.DataFrame]:
    """`_build_schema`, remembered for the same columns and the same checks object."""
    key = (tuple(columns.items()), id(checks), rules, nulls, unique, only)
    hit = _SCHEMAS.get(key)
    if hit is not None and hit[0] is checks:
        return hit[1]
    built = _build_schema(columns, checks, rules, nulls=nulls, unique=unique, only=only)
    if len(_SCHEMAS) >= _SCHEMAS_KEPT:
        _SCHEMAS.pop(next(iter(_SCHEMAS)))
    _SCHEMAS[key] = (checks, built)
    return built


def _build_schema(
    columns: dict[str, pl.DataType],
    checks: dict[str, ColumnChecks],
    rules: frozenset[str],
    *,
    nulls: bool,
    unique: bool,
    only: bool = False,
) -> tuple[pa.DataFrameSchema, pl.DataFrame]:
    """A Pandera schema with the given rules, and a table (column, check_number) -> reason.

    `only` keeps just the columns that have one of the rules (a sample's schema).
    """
    unknown = sorted(set(checks) - set(columns))
    if unknown:
        raise ValueError(f"validation_data.checks names columns the file lacks: {unknown}")
    specs, lookup = {}, []
    for name, dtype in columns.items():
        chosen = checks.get(name, ColumnChecks())
        picked = [r for r in _rules(chosen, dtype) if r[0] in rules]
        if only and not picked:
            continue
        for number, (rule, _check, before, after) in enumerate(picked):
            lookup.append((name, number, rule, before, after))
        specs[name] = _pandera().Column(
            None if isinstance(dtype, (pl.Map, pl.Float16)) else dtype,  # pandera lacks them
            checks=[r[1] for r in picked],
            nullable=chosen.nullable or not nulls,
            unique=chosen.unique and unique,
        )
    table = pl.DataFrame(
        lookup,
        schema={
            "column": pl.String,
            "check_number": pl.Int32,
            "rule": pl.String,
            "before": pl.String,
            "after": pl.String,
        },
        orient="row",
    )
    return _pandera().DataFrameSchema(specs, strict=not only, ordered=not only), table


def build_checks_schema(
    columns: dict[str, pl.DataType], checks: dict[str, ColumnChecks]
) -> pa.DataFrameSchema:
    """The full Pandera schema: exactly these columns and types, nullability and every check.

    Raises:
        ValueError: `checks` names a column that is not in `columns`.
    """
    rules = CHEAP_RULES | SAMPLED_RULES
    return _schema(columns, checks, rules, nulls=True, unique=True)[0]


def _rule_names(lookup: pl.DataFrame) -> Iterator[tuple[str, str]]:
    """The (column, rule) pairs of a lookup table, without a query (~0.2 ms a batch)."""
    return zip(lookup["column"].to_list(), lookup["rule"].to_list(), strict=True)


def _pandera_rejects(
    source: Place, schema: pa.DataFrameSchema, lookup: pl.DataFrame, frame: pl.DataFrame
) -> pl.DataFrame:
    """Validate `frame` (which has `__row`) and turn the failure cases into rejects without raw.

    A schema without row rules (no checks, every column nullable) only checks columns and
    types, so once Pandera has passed a frame schema, later batches with the same one pass
    without another call (~2 ms a batch, ~18 CPU-s over a 244M-row load).
    """
    import pandera.errors

    types_only = lookup.height == 0 and all(
        c.nullable and not c.unique for c in schema.columns.values()
    )
    key = (id(schema), tuple(frame.schema.items()))
    if types_only and _TYPES_PASSED.get(key) is schema:
        return NO_RAW
    try:
        schema.validate(frame.drop(ROW), lazy=True)
        if types_only:
            if len(_TYPES_PASSED) >= _SCHEMAS_KEPT:
                _TYPES_PASSED.pop(next(iter(_TYPES_PASSED)))
            _TYPES_PASSED[key] = schema
        return NO_RAW
    except pandera.errors.SchemaErrors as exc:
        cases: pl.DataFrame = exc.failure_cases
    whole = cases.filter(pl.col("index").is_null())
    if whole.height:  # types or columns wrong: not a row problem, the cast plan is wrong
        lines = [f"  column {c!r}: {k} failed" for c, k in whole.select("column", "check").rows()]
        raise ValidationFailed(source, whole.height, "\n".join(lines))
    cases = cases.join(lookup, on=["column", "check_number"], how="left")
    null = pl.col("check") == "not_nullable"
    return cases.select(
        frame[ROW].gather(cases["index"]).alias(ROW),
        "column",
        rule=pl.when(null).then(pl.lit("not_null")).otherwise(pl.col("rule")),
        reason=pl.when(null)
        .then(pl.lit("null in a column that must not be null"))
        .otherwise(pl.concat_str("before", "failure_case", "after", ignore_nulls=True)),
    )


def _unique_rejects(frame: pl.DataFrame, columns: list[str], seen: SeenValues) -> pl.DataFrame:
    """Later repeats of a value, within the batch and against `seen`, which learns the kept ones.

    The first row with a value is kept. With one unique column a single pass both looks up and
    adds; with several, a row repeating in one column must not add its values of the others.
    """
    single = len(columns) == 1
    parts, fresh = [], {}
    for name in columns:
        values = frame.select(ROW, pl.col(name)).filter(pl.col(name).is_not_null())
        hashes = values[name].hash(seed=0)
        first = hashes.is_first_distinct().to_numpy()
        candidates = hashes.filter(pl.Series(first)).to_numpy()
        repeat = ~first
        repeat[first] = (seen.add if single else seen.contains)(name, candidates)
        parts.append(
            values.filter(repeat).select(
                ROW,
                column=pl.lit(name),
                rule=pl.lit("unique"),
                reason=quoted(pl.col(name), "repeats an earlier row"),
            )
        )
        fresh[name] = pl.DataFrame({ROW: values[ROW], "h": hashes}).filter(~repeat)
    rejects = pl.concat(parts)
    if not single:
        bad = rejects[ROW].implode()
        for name, kept in fresh.items():
            seen.add(name, kept.filter(~pl.col(ROW).is_in(bad))["h"].to_numpy())
    return rejects


def split_batch(
    batch: pl.DataFrame,
    plan: CastPlan,
    schema: dict[str, pl.DataType],
    validation: ValidationConfig,
    seed: int,
    *,
    seen: SeenValues | None = None,
    source: Place = "",
    nul_free: Collection[str] = (),
) -> BatchOutcome:
    """Cast and check one batch; keep the rows that pass everything, reject the others.

    Args:
        batch: rows as read, with `__row`.
        plan: the casts to apply.
        schema: the profiled read schema (column to type, without `__row`), as for
            `cast_with_rejects`.
        validation: the checks, and `sample_size` for the sampled ones.
        seed: the sample's seed (use the batch number, so a rerun samples the same rows).
        seen: the run's unique-value state; without it, unique holds within the batch only.
        source: the file, for error messages.
        nul_free: text columns the reader saw no NUL byte in (see `server_limits`).

    Returns:
        Good rows (cast, without `__row`), rejects, and the rows each check ran on.

    Raises:
        ValidationFailed: a column has the wrong type after casting (a bug, not a bad row).
    """
    cast, failed = cast_failures(batch, plan, schema)
    output, checks, rows = plan.output_schema(schema), validation.checks, cast.height
    checked = {"cast": rows} | {f"{c}.not_null": rows for c, v in checks.items() if not v.nullable}
    # unique is not left to Pandera: it must hold across batches (SeenValues).
    cheap, lookup = _schema(output, checks, CHEAP_RULES, nulls=True, unique=False)
    # Values the server would refuse mid-COPY, aborting it: rejected here like any bad value.
    found = [_pandera_rejects(source, cheap, lookup, cast), refused_values(cast, ROW, nul_free)]
    checked |= {f"{c}.{r}": rows for c, r in _rule_names(lookup)}

    costly, lookup = _schema(output, checks, SAMPLED_RULES, nulls=False, unique=False, only=True)
    if lookup.height:
        size = validation.sample_size
        n = rows if size >= 1 else max(int(rows * size), min(rows, 1))
        sample = cast if n == rows else cast.sample(n=n, seed=seed)
        found.append(_pandera_rejects(source, costly, lookup, sample.select(ROW, *costly.columns)))
        checked |= {f"{c}.{r}": n for c, r in _rule_names(lookup)}

    # A cell whose cast failed is null now: it is not reported again by a null or other check.
    found = [f for f in found if f.height]
    if found and failed.height:
        cells = failed.select(ROW, "column")
        found = [pl.concat(found).join(cells, on=[ROW, "column"], how="anti")]
    rejects = pl.concat([failed, *found]) if found else failed
    unique = [c for c, v in checks.items() if v.unique]
    if unique:
        candidates = cast.filter(~pl.col(ROW).is_in(rejects[ROW].implode()))
        state = seen if seen is not None else SeenValues(rows)
        rejects = pl.concat([rejects, _unique_rejects(candidates, unique, state)])
        checked |= {f"{c}.unique": candidates.height for c in unique}

    if not rejects.height:  # the usual case: no copy of the batch
        columns = cast.get_columns()
        return BatchOutcome(pl.DataFrame(columns[1:]), columns[0], empty_rejects(), checked)
    rejects = with_raw(rejects.sort(ROW, maintain_order=True), batch, list(schema))
    good = cast.filter(~pl.col(ROW).is_in(rejects[ROW].implode()))
    return BatchOutcome(good.drop(ROW), good[ROW], rejects, checked)


def over_limit(bad_rows: int, total_rows: int, validation: ValidationConfig) -> str | None:
    """The limit the bad rows exceed, as the config spells it, or None when they are tolerated.

    `max_bad_rows` applies when it was set or when `max_bad_fraction` was not (its default, 0,
    would otherwise make a fraction pointless); `max_bad_fraction` applies when set. With both set,
    exceeding either fails.
    """
    fraction = validation.max_bad_fraction
    count_applies = fraction is None or "max_bad_rows" in validation.model_fields_set
    if count_applies and bad_rows > validation.max_bad_rows:
        return f"max_bad_rows={validation.max_bad_rows}"
    if fraction is not None and total_rows > 0 and bad_rows / total_rows > fraction:
        return f"max_bad_fraction={fraction:g}"
    return None
