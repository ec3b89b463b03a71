"""What a run report needs beyond the `runs` row: its samples, phases, plan, drift and rejects.

`run_samples` keeps rows done, rows/s and RSS about once a second; `run_facts` the phases, the
plan's estimate and budget, drift and notes. Both are written as the run ends (after the commit
or the failure), created on first use like the quarantine and schema history tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from ingest.runtime.timeline import Phase, Sample
from ingest.state.ledger import RunRow
from ingest.state.tables import create_tables

Conn = psycopg.Connection[Any]

_LOCK_KEY = 0x70676C6B726C6F67  # "pglkrlog": serialises concurrent creation
_DDL: tuple[LiteralString, ...] = (
    """create table if not exists {schema}.run_samples (
        run_id text not null, seq int not null, elapsed_s real not null, rows bigint not null,
        rows_per_s real not null, rss_bytes bigint not null, primary key (run_id, seq))""",
    """create table if not exists {schema}.run_facts (
        run_id text primary key, estimate_bytes bigint, budget_bytes bigint, plan jsonb,
        phases jsonb not null, drift jsonb not null, notes jsonb not null,
        quarantine_schema text, quarantine_table text,
        recorded_at timestamptz not null default now())""",
)


@dataclass(frozen=True)
class RunFacts:
    """The plan, phases, drift and notes of one run, as the report shows them."""

    estimate_bytes: int
    budget_bytes: int
    plan: dict[str, Any]
    phases: list[Phase]
    drift: list[str]
    notes: list[str]
    quarantine: tuple[str, str]


@dataclass(frozen=True)
class RejectRule:
    """How many rows one rule rejected in a run, with the first few."""

    rule: str
    rows: int
    columns: list[str]
    examples: list[str] = field(default_factory=list)


def record(
    conn: Conn, schema: str, run_id: str, facts: RunFacts, samples: Sequence[Sample]
) -> None:
    """Store a run's facts and samples in one transaction (replacing any stored before)."""
    ident = sql.Identifier(schema)
    phases = [{"name": p.name, "start_s": p.start_s, "end_s": p.end_s} for p in facts.phases]
    with conn.transaction():
        create_tables(conn, schema, _LOCK_KEY, _DDL)
        for table in ("run_samples", "run_facts"):
            conn.execute(
                sql.SQL("delete from {} where run_id = %s").format(sql.Identifier(schema, table)),
                [run_id],
            )
        conn.execute(
            sql.SQL(
                "insert into {}.run_facts (run_id, estimate_bytes, budget_bytes, plan, phases,"
                " drift, notes, quarantine_schema, quarantine_table)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(ident),
            (
                run_id,
                facts.estimate_bytes,
                facts.budget_bytes,
                Jsonb(facts.plan),
                Jsonb(phases),
                Jsonb(facts.drift),
                Jsonb(facts.notes),
                *facts.quarantine,
            ),
        )
        copy = sql.SQL(
            "copy {}.run_samples (run_id, seq, elapsed_s, rows, rows_per_s, rss_bytes) from stdin"
        ).format(ident)
        with conn.cursor() as cur, cur.copy(copy) as out:
            for seq, s in enumerate(samples):
                out.write_row((run_id, seq, s.elapsed_s, s.rows, s.rows_per_s, s.rss_bytes))


def _has(conn: Conn, schema: str, table: str) -> bool:
    row = conn.execute("select to_regclass(format('%%I.%%I', %s::text, %s::text))", (schema, table))
    found = row.fetchone()
    return found is not None and found[0] is not None


def find_run(conn: Conn, schema: str, run_id: str | None) -> RunRow | None:
    """The run with this id (or the only one starting with it); None: the latest run."""
    if not _has(conn, schema, "runs"):
        return None
    names = sql.SQL(", ").join(sql.Identifier(f) for f in RunRow.__dataclass_fields__)
    where, params = sql.SQL(""), []
    if run_id:
        escaped = run_id.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
        where, params = sql.SQL("where run_id like %s"), [escaped + "%"]
    query = sql.SQL("select {} from {}.runs {} order by started_at desc limit 2").format(
        names, sql.Identifier(schema), where
    )
    with conn.cursor(row_factory=class_row(RunRow)) as cursor:
        rows = cursor.execute(query, params).fetchall()
    exact = [r for r in rows if r.run_id == run_id]
    if exact:
        return exact[0]
    if not run_id:
        return rows[0] if rows else None
    return rows[0] if len(rows) == 1 else None


def read_samples(conn: Conn, schema: str, run_id: str) -> list[Sample]:
    """A run's samples in the order they were taken; empty when none were kept."""
    if not _has(conn, schema, "run_samples"):
        return []
    rows = conn.execute(
        sql.SQL(
            "select elapsed_s, rows, rows_per_s, rss_bytes from {}.run_samples"
            " where run_id = %s order by seq"
        ).format(sql.Identifier(schema)),
        [run_id],
    ).fetchall()
    return [Sample(float(e), int(r), float(v), int(m)) for e, r, v, m in rows]


def read_facts(conn: Conn, schema: str, run_id: str) -> RunFacts | None:
    """A run's facts, or None (a run from before they were kept, or one killed outright)."""
    if not _has(conn, schema, "run_facts"):
        return None
    row = conn.execute(
        sql.SQL(
            "select estimate_bytes, budget_bytes, plan, phases, drift, notes,"
            " quarantine_schema, quarantine_table from {}.run_facts where run_id = %s"
        ).format(sql.Identifier(schema)),
        [run_id],
    ).fetchone()
    if row is None:
        return None
    estimate, budget, plan, phases, drift, notes, q_schema, q_table = row
    return RunFacts(
        estimate_bytes=int(estimate or 0),
        budget_bytes=int(budget or 0),
        plan=dict(plan or {}),
        phases=[Phase(str(p["name"]), float(p["start_s"]), float(p["end_s"])) for p in phases],
        drift=[str(line) for line in drift],
        notes=[str(line) for line in notes],
        quarantine=(str(q_schema), str(q_table)),
    )


def rejects_by_rule(
    conn: Conn, quarantine: tuple[str, str], run_id: str, examples: int = 3
) -> list[RejectRule]:
    """Rows each rule rejected in the run, most first, with the first `examples` of each."""
    if not _has(conn, *quarantine):
        return []
    table = sql.Identifier(*quarantine)
    counts = conn.execute(
        sql.SQL(
            "select rule, count(*), array_agg(distinct column_name order by column_name)"
            " from {} where run_id = %s group by rule order by count(*) desc, rule"
        ).format(table),
        [run_id],
    ).fetchall()
    shown = conn.execute(
        sql.SQL(
            "select rule, row_kind, row_number, column_name, reason, raw_values from ("
            " select *, row_number() over (partition by rule order by row_number) as nth"
            " from {} where run_id = %s) ranked where nth <= %s order by rule, row_number"
        ).format(table),
        [run_id, examples],
    ).fetchall()
    by_rule: dict[str, list[str]] = {}
    for rule, kind, number, column, reason, raw in shown:
        where = "line" if kind.endswith("_line") else "row"
        text = f"{where} {number:,}, column {column!r}: {reason}"
        if raw:
            text += f" (raw: {_clip(str(raw))})"
        by_rule.setdefault(str(rule), []).append(text)
    return [
        RejectRule(str(rule), int(n), [str(c) for c in cols], by_rule.get(str(rule), []))
        for rule, n, cols in counts
    ]


def _clip(text: str, width: int = 160) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
