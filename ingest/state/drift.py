"""Record each source's columns in PostgreSQL, diff them against the last run, and act on drift."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import polars as pl
from psycopg import sql

from ingest.errors import SchemaDrift, Where
from ingest.stages.encode import pg_type

Log = Callable[[str], None]

_ALIASES = {
    "int": "integer",
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "float": "double precision",
    "float4": "real",
    "float8": "double precision",
    "bool": "boolean",
    "decimal": "numeric",
    "character varying": "varchar",
}
_ZONED = re.compile(r"(timestamp|time)(\(\d+\))? with(out)? time zone")
_IDENT = r'(?:[a-z_][a-z0-9_$]*|"(?:[^"]|"")+")'
_WORDS = r"(?: (?:precision|varying|year|month|day|hour|minute|second|to))*"
_TYPE = re.compile(rf"{_IDENT}(?:\.{_IDENT})?{_WORDS}(?:\(\d+(?:,\d+)?\))?(?:\[\])*")
_INT_DIGITS = {"smallint": 5, "integer": 10, "bigint": 19}
_EXACT_FLOAT = {"real": {"smallint"}, "double precision": {"smallint", "integer", "real"}}
_NUMERIC = {*_INT_DIGITS, "numeric", "real", "double precision"}
_PRECISION = {"varchar": 10**9, "timestamp": 6, "timestamptz": 6, "time": 6, "timetz": 6}
_RENAME_RATIO = 0.8


def normalize_type(name: str) -> str:
    """The canonical spelling of a PostgreSQL type (`int4` → `integer`, `timestamptz`, ...).

    Raises:
        ValueError: the text is not a plain type name, so it is never spliced into SQL.
    """
    text = re.sub(r"\s*([(,\[\]])\s*", r"\1", " ".join(name.split())).replace(" )", ")")
    if '"' not in text:
        text = text.lower()
        if match := _ZONED.fullmatch(text):
            text = match.group(1) + ("" if match.group(3) else "tz") + (match.group(2) or "")
        base, _, rest = text.partition("(")
        text = _ALIASES.get(base, base) + (f"({rest}" if rest else "")
    if not _TYPE.fullmatch(text):
        raise ValueError(f"not a PostgreSQL type name: {name!r}")
    return text


@dataclass(frozen=True)
class ColumnSpec:
    """One column as the loader creates it; `pg_type` is normalized on construction."""

    name: str
    pg_type: str
    nullable: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "pg_type", normalize_type(self.pg_type))


def columns_from_polars(
    schema: Mapping[str, pl.DataType], not_null: Collection[str] = ()
) -> list[ColumnSpec]:
    """The specs of a polars schema, typed as `encode.pg_type` creates them."""
    return [
        ColumnSpec(name, pg_type(dtype), name not in not_null) for name, dtype in schema.items()
    ]


def fingerprint(columns: Sequence[ColumnSpec]) -> str:
    """A SHA-256 of names, types and nullability, in order."""
    data = [[c.name, c.pg_type, c.nullable] for c in columns]
    return hashlib.sha256(json.dumps(data, separators=(",", ":")).encode()).hexdigest()


def _split(type_name: str) -> tuple[str, list[int]]:
    base, _, rest = type_name.partition("(")
    return base, [int(p) for p in rest.rstrip(")").split(",")] if rest else []


def widens(old: str, new: str) -> bool:
    """True when every value of type `old` converts to `new` exactly (bigint → double is lossy)."""
    old, new = normalize_type(old), normalize_type(new)
    if old == new:
        return False
    if new == "text":
        return True
    if old.endswith("]") or new.endswith("]"):
        return False
    (ob, op), (nb, np_) = _split(old), _split(new)
    if ob in _INT_DIGITS:
        if nb in _INT_DIGITS:
            return _INT_DIGITS[nb] > _INT_DIGITS[ob]
        if nb == "numeric":
            return not np_ or np_[0] - (np_[1:] or [0])[0] >= _INT_DIGITS[ob]
        return ob in _EXACT_FLOAT.get(new, set())
    if ob == "real":
        return new == "double precision"
    if ob == nb == "numeric":
        if not np_ or not op:
            return not np_
        (p, s), (p2, s2) = [*op, 0][:2], [*np_, 0][:2]
        return s2 >= s and p2 - s2 >= p - s
    if ob == "date":
        return nb in ("timestamp", "timestamptz")
    if (ob, nb) == ("timestamp", "timestamptz") or (ob == nb and ob in _PRECISION):
        return (np_ or [_PRECISION[nb]])[0] >= (op or [_PRECISION[ob]])[0]
    return False


def _squash(name: str) -> str:
    return re.sub(r"[\W_]+", "", name.casefold())


@dataclass(frozen=True)
class Renamed:
    """A removed and an added column that look like one column renamed."""

    old: ColumnSpec
    new: ColumnSpec


@dataclass(frozen=True)
class Retyped:
    """A column whose type changed; `widening` when every old value fits the new type."""

    name: str
    old_type: str
    new_type: str
    widening: bool

    @property
    def kind(self) -> str:
        """`widening`, `narrowing` (the reverse widens, or both are numbers) or `incompatible`."""
        if self.widening:
            return "widening"
        numbers = {_split(self.old_type)[0], _split(self.new_type)[0]} <= _NUMERIC
        return "narrowing" if numbers or widens(self.new_type, self.old_type) else "incompatible"


@dataclass(frozen=True)
class Nullability:
    """A column that became nullable, or NOT NULL."""

    name: str
    nullable: bool


@dataclass(frozen=True)
class Drift:
    """How a new column list differs from the recorded one; order alone is not drift."""

    added: tuple[ColumnSpec, ...] = ()
    removed: tuple[ColumnSpec, ...] = ()
    renamed: tuple[Renamed, ...] = ()
    retyped: tuple[Retyped, ...] = ()
    nullability: tuple[Nullability, ...] = ()
    reordered: bool = False

    @property
    def empty(self) -> bool:
        """No column was added, removed, renamed, retyped or changed nullability."""
        return not (self.added or self.removed or self.renamed or self.retyped or self.nullability)

    def changes(self) -> list[str]:
        """One human line per change, e.g. "column 'Age' retyped integer → bigint (widening)"."""
        lines = [f"column {c.name!r} added ({c.pg_type})" for c in self.added]
        lines += [f"column {c.name!r} removed" for c in self.removed]
        lines += [f"column {r.new.name!r} looks renamed from {r.old.name!r}" for r in self.renamed]
        lines += [
            f"column {t.name!r} retyped {t.old_type} → {t.new_type} ({t.kind})"
            for t in self.retyped
        ]
        lines += [
            f"column {n.name!r} became {'nullable' if n.nullable else 'NOT NULL'}"
            for n in self.nullability
        ]
        return lines


def diff(old: Sequence[ColumnSpec], new: Sequence[ColumnSpec]) -> Drift:
    """Compare two column lists by name; pure, so every kind of change is unit-testable.

    A removed and an added column of the same type count as a rename when their names are equal
    ignoring case and punctuation, or when they sit at the same position and the names' difflib
    ratio is at least 0.8.
    """
    old_by, new_by = {c.name: c for c in old}, {c.name: c for c in new}
    old_pos, new_pos = (
        {c.name: i for i, c in enumerate(old)},
        {c.name: i for i, c in enumerate(new)},
    )
    removed = [c for c in old if c.name not in new_by]
    added = [c for c in new if c.name not in old_by]
    renamed: list[Renamed] = []
    for gone in list(removed):
        scores: list[tuple[float, ColumnSpec]] = []
        for cand in added:
            if cand.pg_type != gone.pg_type:
                continue
            a, b = _squash(gone.name), _squash(cand.name)
            if a == b:
                scores.append((2.0, cand))
            elif old_pos[gone.name] == new_pos[cand.name]:
                ratio = difflib.SequenceMatcher(None, a, b).ratio()
                if ratio >= _RENAME_RATIO:
                    scores.append((ratio, cand))
        if scores:
            best = max(scores, key=lambda s: s[0])[1]
            renamed.append(Renamed(gone, best))
            removed.remove(gone)
            added.remove(best)
    common = [c for c in old if c.name in new_by]
    return Drift(
        added=tuple(added),
        removed=tuple(removed),
        renamed=tuple(renamed),
        retyped=tuple(
            Retyped(c.name, c.pg_type, t, widens(c.pg_type, t))
            for c in common
            if (t := new_by[c.name].pg_type) != c.pg_type
        ),
        nullability=tuple(
            Nullability(c.name, new_by[c.name].nullable)
            for c in common
            if new_by[c.name].nullable != c.nullable
        ),
        reordered=[c.name for c in common] != [c.name for c in new if c.name in old_by],
    )


def _display(schema: str, table: str) -> str:
    return sql.Identifier(schema, table).as_string()


def _using(column: sql.Identifier, old: str, new: str) -> sql.Composable:
    if _split(new)[0] == "timestamptz" and _split(old)[0] in ("date", "timestamp"):
        # encode writes naive and zoned datetimes as the same microseconds, i.e. naive means UTC;
        # saying so keeps the result independent of the session's TimeZone.
        return sql.SQL("{}::timestamp at time zone 'UTC'").format(column)
    return sql.SQL("{}::{}").format(column, sql.SQL(new))


def evolve_statements(
    schema: str, table: str, drift: Drift, *, source: str | None = None, path: Where | None = None
) -> list[sql.Composed]:
    """The DDL that makes the table hold the new columns: one ALTER TABLE (one rewrite at most).

    Added columns are added nullable (old rows have no value); widened columns change type;
    columns that became nullable drop NOT NULL. A removed nullable column stays in the table and
    new rows leave it NULL. Becoming NOT NULL needs no DDL (validation enforces it on new rows).

    Raises:
        SchemaDrift: a rename, a non-widening type change or a removed NOT NULL column, which
            evolve never does silently; the message lists each one.
    """
    refused = [f"{line}: evolve never renames" for line in Drift(renamed=drift.renamed).changes()]
    for t in drift.retyped:
        if not t.widening:
            refused += [f"{Drift(retyped=(t,)).changes()[0]}: evolve only widens"]
    refused += [
        f"column {c.name!r} removed but NOT NULL: new rows could not fill it"
        for c in drift.removed
        if not c.nullable
    ]
    if refused:
        # on_drift is already evolve: say what does help.
        fix = (
            "evolve only adds columns and widens types; cast a narrowed or changed column back "
            "to the table's type with schema_config.data_type, rename a renamed column back in "
            "the file, or load with if_table_exists: replace to take the file's schema"
        )
        raise SchemaDrift(source or table, _display(schema, table), refused, path, fix)
    actions = [
        sql.SQL("add column if not exists {} {}").format(sql.Identifier(c.name), sql.SQL(c.pg_type))
        for c in drift.added
    ]
    for t in drift.retyped:
        col = sql.Identifier(t.name)
        actions.append(
            sql.SQL("alter column {} type {} using {}").format(
                col, sql.SQL(t.new_type), _using(col, t.old_type, t.new_type)
            )
        )
    actions += [
        sql.SQL("alter column {} drop not null").format(sql.Identifier(n.name))
        for n in drift.nullability
        if n.nullable
    ]
    if not actions:
        return []
    return [
        sql.SQL("alter table {} {}").format(
            sql.Identifier(schema, table), sql.SQL(", ").join(actions)
        )
    ]


def decide(
    policy: str,
    source: str,
    table: str,
    drift: Drift,
    log: Log,
    *,
    schema: str,
    path: Where | None = None,
) -> list[sql.Composed]:
    """Apply `on_drift`: fail raises, warn logs each change, evolve returns the DDL to run.

    Raises:
        SchemaDrift: `fail` with any drift, or `evolve` with drift it cannot apply.
        ValueError: an unknown policy.
    """
    if drift.reordered:
        log(f"source {source!r}: columns reordered (harmless: loads match columns by name)")
    if policy not in ("fail", "warn", "evolve"):
        raise ValueError(f"unknown on_drift policy {policy!r}; use fail, warn or evolve")
    if drift.empty:
        return []
    if policy == "fail":
        raise SchemaDrift(source, _display(schema, table), drift.changes(), path)
    statements = (
        []
        if policy == "warn"
        else evolve_statements(schema, table, drift, source=source, path=path)
    )
    for line in drift.changes():
        log(f"source {source!r}: schema drift ({policy}): {line}")
    return statements
