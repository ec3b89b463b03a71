"""Record how a run ended, with what its report needs (samples, phases, plan, drift)."""

from __future__ import annotations

import time

import psycopg

from ingest.errors import IngestError
from ingest.executors.local import Counts, Session
from ingest.executors.task import Job
from ingest.pg.db import Conn, ensure_live
from ingest.runtime.memory import peak_rss
from ingest.runtime.report import mb
from ingest.runtime.secrets import scrub
from ingest.runtime.timeline import Phase
from ingest.state import ledger, runlog


def finish(
    job: Job, env: Session, counts: Counts, status: ledger.RunStatus, error: str | None
) -> None:
    """Record in the ledger how the run ended; only logged if that cannot be written.

    The control connection may be the reason the run failed, or have gone after the commit:
    the row is then written over a new one.
    """
    try:
        conn = ensure_live(env.control, env.url)
        try:
            ledger.finish_run(
                conn,
                job.meta,
                job.run_id,
                status=status,
                rows_read=counts.read,
                rows_loaded=counts.loaded,
                rows_rejected=counts.rejected,
                peak_rss_mb=mb(max(env.watch.peak, peak_rss())),
                duration_s=time.monotonic() - env.started,
                error=error,
                secrets=[env.url],
            )
            keep_timeline(conn, job, counts, env)
        finally:
            if conn is not env.control:
                conn.close()
    except (psycopg.Error, IngestError) as exc:
        reason = scrub(str(exc).splitlines()[0], [env.url])
        env.log(
            f"could not record in {job.meta}.runs that run {job.run_id} ended {status}"
            f" ({reason}); the next run marks it killed"
        )


def interrupted(job: Job, env: Session, counts: Counts) -> None:
    """Ctrl-C, which may land as the commit is sent: say what the database holds, record it."""
    try:
        went_through = ledger.committed(env.control, job.meta, job.run_id)
    except Exception:  # the interrupted connection may be unusable: report what we know
        went_through = False
    if went_through:
        env.log(f"interrupted after the commit: {job.target.display} holds this run's rows")
        finish(job, env, counts, "success", None)
    else:
        env.log(
            f"interrupted: nothing was changed in {job.target.display}; run marked killed;"
            " run again to load it"
        )
        finish(job, env, counts, "killed", "interrupted")


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
