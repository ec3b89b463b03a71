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
from pathlib import Path

import polars as pl

from ingest.config import ColumnChecks, ValidationConfig
from ingest.errors import ValidationFailed
from ingest.runtime.memory import without_modules
from ingest.stages.cast import CastPlan
from ingest.stages.server_limits import printable, refused_values
from ingest.stages.unique import SeenValues

with without_modules("pandas"):  # see without_modules: pandera would load pandas for nothing
    import pandera.errors
    import pandera.polars as pa

# The row index column the pipeline adds to each batch. A NUL byte cannot be in a user column
# (PostgreSQL refuses it in a name, and so does check_column_names), so the two never collide.
ROW = "\0row"
REJECTS_SCHEMA: dict[str, pl.DataType] = {
    ROW: pl.Int64(),
    "column": pl.String(),
    "rule": pl.String(),
    "reason": pl.String(),
    "raw": pl.String(),
}
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


def _type_label(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Decimal):
        return f"decimal({dtype.precision},{dtype.scale})"
    if isinstance(dtype, pl.Datetime):
        return f"datetime[{dtype.time_zone}]" if dtype.time_zone else "datetime"
    return str(dtype).lower()


def _parse(col: pl.Expr, source: pl.DataType, target: pl.DataType, fmt: str | None) -> pl.Expr:
    """`col` converted to `target`, null where a value does not convert."""
    if source == pl.String():
        # polars 2 does not cast text to temporal or boolean types; parse it instead.
        if isinstance(target, pl.Datetime):
            zone = target.time_zone
            parsed = col.str.to_datetime(fmt, time_unit="us", time_zone=zone, strict=False)
            if zone is None and fmt is None:
                # polars gives null for text with an offset ("...Z") when no zone is asked for:
                # read such text as UTC instants, kept as naive UTC like the rest.
                utc = col.str.to_datetime(None, time_unit="us", time_zone="UTC", strict=False)
                parsed = pl.coalesce(parsed, utc.dt.replace_time_zone(None))
            return parsed
        if target == pl.Date():
            return col.str.to_date(fmt, strict=False)
        if target == pl.Time():
            return col.str.to_time(fmt, strict=False)
        if target == pl.Boolean():  # as polars' CSV reader: true/false in any case
            words = {"true": True, "false": False}
            return col.str.to_lowercase().replace_strict(words, default=None, return_dtype=target)
    if source.is_float() and target.is_integer():
        # A cast would truncate 1.5 to 1: only whole numbers convert, the rest are bad values.
        return pl.when(col == col.floor()).then(col.cast(target, strict=False))
    return col.cast(target, strict=False)


def _lenient_casts(
    plan: CastPlan, schema: dict[str, pl.DataType], actual: dict[str, pl.DataType]
) -> tuple[list[pl.Expr], dict[str, str]]:
    """`cast.cast_expressions` with strict=False, and a label for each column that can fail.

    A column goes from its `actual` type to the plan's type, else to its `schema` type: so a
    batch re-read as text is parsed back to the types the file was profiled with.
    """
    exprs, labels = [], {}
    for name, dtype in schema.items():
        col, target, fmt = pl.col(name), plan.types.get(name, dtype), plan.date_formats.get(name)
        if target != actual[name] or fmt is not None:
            col = _parse(col, actual[name], target, fmt)
            labels[name] = f"{_type_label(target)} ({fmt})" if fmt else _type_label(target)
        if plan.round_floats is not None and target in (pl.Float32(), pl.Float64()):
            col = col.round(plan.round_floats)
        exprs.append(col.alias(name))
    return exprs, labels


def _unchanged(
    plan: CastPlan, schema: dict[str, pl.DataType], actual: dict[str, pl.DataType]
) -> bool:
    """Whether `_lenient_casts` would leave every column as it is."""
    floats = (pl.Float32(), pl.Float64())
    return all(
        plan.types.get(name, dtype) == actual[name]
        and plan.date_formats.get(name) is None
        and (plan.round_floats is None or actual[name] not in floats)
        for name, dtype in schema.items()
    )


_EMPTY_REJECTS = pl.DataFrame(schema=REJECTS_SCHEMA)


def _empty_rejects() -> pl.DataFrame:
    return _EMPTY_REJECTS  # frames are immutable: one empty frame serves every batch


_NO_FOUND = _EMPTY_REJECTS.drop("raw")


def _cast_failures(
    batch: pl.DataFrame, plan: CastPlan, schema: dict[str, pl.DataType]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The cast frame (with `__row`) and its failed cells, without `raw`."""
    if ROW not in batch.columns:
        raise ValueError(f"the batch has no {ROW!r} column; add it with with_row_index({ROW!r})")
    actual = dict(batch.schema)
    if _unchanged(plan, schema, actual) and actual[ROW] == pl.Int64():
        # The usual batch: nothing to cast. Frames built from their columns skip the query
        # engine's ~0.1 ms a call, which thousands of small batches would pay.
        return pl.DataFrame([batch[ROW], *(batch[name] for name in schema)]), _NO_FOUND
    exprs, labels = _lenient_casts(plan, schema, actual)
    cast = batch.select(pl.col(ROW).cast(pl.Int64), *exprs)
    if not labels:
        return cast, _NO_FOUND
    both = pl.concat(
        [
            batch.select(list(labels)),
            cast.select(ROW, *[pl.col(c).alias(f"{c}\0out") for c in labels]),
        ],
        how="horizontal",
    )
    parts = [
        both.lazy()
        .filter(pl.col(c).is_not_null() & pl.col(f"{c}\0out").is_null())
        .select(
            ROW,
            column=pl.lit(c),
            rule=pl.lit("cast"),
            reason=_quoted(pl.col(c), f"is not {label}"),
        )
        for c, label in labels.items()
    ]
    return cast, pl.concat(pl.collect_all(parts))


def _quoted(value: pl.Expr, after: str) -> pl.Expr:
    """`'value' after`, as text, for a reject's reason.

    Not `pl.format`: in polars 2.1 it panics (`binview ... i < self.len()`) on a column whose
    first chunk is empty, which a filter of a multi-chunk batch (a CSV batch joined from two
    reads) yields whenever none of the first read's rows is bad. `concat_str` takes any chunks.
    """
    return pl.concat_str(pl.lit("'"), value.cast(pl.String), pl.lit(f"' {after}"))


def _with_raw(rejects: pl.DataFrame, batch: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Attach the whole source row, JSON-encoded, to each reject."""
    if rejects.height == 0:
        return _empty_rejects()
    rows = batch.with_columns(pl.col(ROW).cast(pl.Int64)).filter(
        pl.col(ROW).is_in(rejects[ROW].unique().implode())
    )
    raw = printable(rows).select(ROW, raw=pl.struct(columns).struct.json_encode())
    out = rejects.join(raw, on=ROW, how="left", maintain_order="left")
    return out.select(pl.col(name).cast(dtype) for name, dtype in REJECTS_SCHEMA.items())


def cast_with_rejects(
    batch: pl.DataFrame, plan: CastPlan, schema: dict[str, pl.DataType]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cast a batch leniently: a value that fails becomes null and a reject record.

    Args:
        batch: the rows as read, with `__row`.
        plan: the casts to apply.
        schema: the profiled read schema (column to type, without `__row`); a column the plan
            does not cast but whose batch type differs (a chunk re-read as text) is parsed to it.

    Returns:
        The cast frame with every row (and `__row`), and one reject per failed cell (in row
        order), where the input was not null and the output is; a null input stays null and is
        not a reject.
    """
    cast, rejects = _cast_failures(batch, plan, schema)
    return cast, _with_raw(rejects.sort(ROW, maintain_order=True), batch, list(schema))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _shown(values: Sequence[str | int | float]) -> str:
    text = repr(values)
    return text if len(text) <= 80 else text[:77] + "...]"


def _rules(checks: ColumnChecks, dtype: pl.DataType) -> list[tuple[str, pa.Check, str, str]]:
    """A column's checks in a fixed order: rule, Pandera check, reason before and after value."""
    out: list[tuple[str, pa.Check, str, str]] = []
    for rule, op in _BOUNDS:
        bound = getattr(checks, rule)
        if bound is not None:
            out.append((rule, getattr(pa.Check, rule)(bound), "", f" {op} {_number(bound)}"))
    text = dtype == pl.String()
    if checks.isin is not None:
        allowed: list[str | int | float] = [str(v) for v in checks.isin] if text else checks.isin
        out.append(("isin", pa.Check.isin(allowed), "'", f"' is not one of {_shown(allowed)}"))
    if checks.notin is not None:
        banned: list[str | int | float] = [str(v) for v in checks.notin] if text else checks.notin
        out.append(("notin", pa.Check.notin(banned), "'", f"' is one of {_shown(banned)}"))
    low, high = checks.str_length or (None, None)
    if low is not None or high is not None:
        span = f"{low or 0}..{high if high is not None else ''}"
        out.append(("str_length", pa.Check.str_length(low, high), "'", f"' length not in {span}"))
    if checks.str_matches is not None:
        regex = checks.str_matches
        out.append(("str_matches", pa.Check.str_matches(regex), "'", f"' does not match {regex!r}"))
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
        specs[name] = pa.Column(
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
    return pa.DataFrameSchema(specs, strict=not only, ordered=not only), table


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
    source: Path | str, schema: pa.DataFrameSchema, lookup: pl.DataFrame, frame: pl.DataFrame
) -> pl.DataFrame:
    """Validate `frame` (which has `__row`) and turn the failure cases into rejects without raw.

    A schema without row rules (no checks, every column nullable) only checks columns and
    types, so once Pandera has passed a frame schema, later batches with the same one pass
    without another call (~2 ms a batch, ~18 CPU-s over a 244M-row load).
    """
    types_only = lookup.height == 0 and all(
        c.nullable and not c.unique for c in schema.columns.values()
    )
    key = (id(schema), tuple(frame.schema.items()))
    if types_only and _TYPES_PASSED.get(key) is schema:
        return _NO_FOUND
    try:
        schema.validate(frame.drop(ROW), lazy=True)
        if types_only:
            if len(_TYPES_PASSED) >= _SCHEMAS_KEPT:
                _TYPES_PASSED.pop(next(iter(_TYPES_PASSED)))
            _TYPES_PASSED[key] = schema
        return _NO_FOUND
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
                reason=_quoted(pl.col(name), "repeats an earlier row"),
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
    source: Path | str = "",
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
    cast, failed = _cast_failures(batch, plan, schema)
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
        return BatchOutcome(pl.DataFrame(columns[1:]), columns[0], _empty_rejects(), checked)
    rejects = _with_raw(rejects.sort(ROW, maintain_order=True), batch, list(schema))
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
