"""Keep what a run's report needs (samples, phases, plan, drift) in the ledger as the run ends."""

from __future__ import annotations

import psycopg

from ingest.executors.local import Counts, Session
from ingest.executors.task import Job
from ingest.pg.db import Conn
from ingest.runtime.secrets import scrub
from ingest.runtime.timeline import Phase
from ingest.state import runlog


def keep_timeline(conn: Conn, job: Job, counts: Counts, env: Session) -> None:
    """Keep the run's samples, phases, plan and drift for its report; the run stands if not."""
    if env.timeline is None:
        return
    env.timeline.sample()  # the last point: where the run ended
    plan, profile = job.plan, job.profile
    facts = runlog.RunFacts(
        estimate_bytes=plan.estimate_bytes,
        budget_bytes=plan.budget_bytes,
        plan={
            "strategy": plan.strategy,
            "reason": plan.reason,
            "batch_rows": plan.batch_rows,
            "workers": plan.workers,
            "format": profile.format,
            "estimated_rows": profile.rows,
        },
        phases=_with_preparation(env.timeline.phases()),
        drift=counts.drift,
        notes=counts.notes,
        quarantine=(job.quarantine.schema, job.quarantine.table),
    )
    try:
        runlog.record(conn, job.meta, job.run_id, facts, env.timeline.samples())
    except psycopg.Error as exc:
        reason = scrub(str(exc).splitlines()[0], [env.url])
        env.log(f"the samples of run {job.run_id} were not kept for its report ({reason})")


PREPARE = "prepare"  # connect, ledger, the table's lock, drift check


def _with_preparation(phases: list[Phase]) -> list[Phase]:
    """The phases, with the stretch between planning and reading named for what fills it."""
    named = {p.name: p for p in phases}
    plan, load = named.get("plan"), named.get("read/COPY")
    if plan is None or load is None or load.start_s <= plan.end_s:
        return phases
    at = phases.index(plan) + 1
    return [*phases[:at], Phase(PREPARE, plan.end_s, load.start_s), *phases[at:]]
