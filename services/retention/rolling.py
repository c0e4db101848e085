"""Rolling retention while the account is open (policy 1.3): purge jobs to the owners.

Each subject of an open account has a purge timer per rolling category; a due timer issues a
purge job (unless a hold covers it: then it skips the round), the receipt re-arms it for the
next round. Jobs are tracked like deletion jobs (re-issue, overdue) in the `jobs` table.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.retention import domain, store
from services.retention.context import Context
from services.retention.domain.rolling import PurgeTimer
from shared.contract.events import PurgeCompleted, PurgeFailed, PurgeJob, PurgeJobData
from shared.plumbing import outbox
from shared.plumbing.db import Conn
from shared.plumbing.handlers import Tx
from shared.plumbing.loops import Items
from shared.plumbing.outbox import Outbox

SOURCE = "privacy-plane.retention"


def purge_event(row: dict[str, Any] | asyncpg.Record, attempt: int, now: datetime) -> PurgeJob:
    """One issue of a purge job (its event id is fixed per job and attempt)."""
    return PurgeJob(
        id=domain.jobs.event_id_for(row["job_id"], attempt),
        source=SOURCE,
        subject=row["subject_id"],
        time=now,
        data=PurgeJobData(
            job_id=row["job_id"],
            owner=row["owner"],
            category=row["category"],
            before=row["purge_before"],
            keep=row["purge_keep"],
            due_by=row["due_by"],
            attempt=attempt,
        ),
    )


# --- the account's lifecycle ---------------------------------------------------------------


async def arm_subject(conn: Conn, ctx: Context, subject_id: str, signed_up_at: datetime) -> None:
    """A subject of an open account: a purge timer per rolling category."""
    plans = [
        (name, ctx.rules.categories[name].owner, domain.rolling.first_purge(rule, signed_up_at))
        for name, rule in ctx.rules.rolling().items()
    ]
    await store.purges.arm(conn, subject_id, plans)


async def resume(conn: Conn, ctx: Context, subject_ids: Sequence[str], at: datetime) -> None:
    """A reopened account: its stopped purge timers run again."""
    await store.purges.resume(conn, subject_ids, at, list(ctx.rules.rolling()))


async def apply_rules(conn: Conn, ctx: Context) -> None:
    """Rolling rules changed: arm new categories for open accounts, stop dropped ones."""
    rolling = ctx.rules.rolling()
    await store.purges.stop_others(conn, list(rolling))
    for name, rule in rolling.items():
        owner = ctx.rules.categories[name].owner
        await store.purges.arm_missing(conn, name, owner, rule, ctx.clock.now())


# --- the timer loop ------------------------------------------------------------------------


async def fire_batch(
    pool: asyncpg.Pool, ctx: Context, schema: str, now: datetime, items: Items
) -> bool:
    """Claim up to one batch of due purge timers; issue their jobs (or skip held rounds)."""
    out = Outbox()

    async def fire(some: Sequence[PurgeTimer]) -> None:
        part = Outbox()
        await _fire(conn, ctx, part, some, now)
        out.rows.extend(part.rows)

    async with pool.acquire() as conn, conn.transaction():
        held = [k.removeprefix("purge:") for k in items.held() if k.startswith("purge:")]
        claimed = await store.purges.claim_due(conn, now, ctx.settings.claim_batch, held)
        if not claimed:
            return False
        await items.each(conn, claimed, lambda t: f"purge:{t.subject_id}\x1f{t.category}", fire)
        await outbox.write(conn, out.rows, schema)
    return len(claimed) == ctx.settings.claim_batch


async def _fire(
    conn: Conn, ctx: Context, out: Outbox, timers: Sequence[PurgeTimer], now: datetime
) -> None:
    holds = await store.holds.holds_for(conn, [t.subject_id for t in timers])
    rolling = ctx.rules.rolling()
    for timer in timers:
        rule = rolling.get(timer.category)
        if rule is None:  # the rule was dropped since; apply_rules stops the rest
            continue
        firing = domain.rolling.fire_purge(timer, rule, holds, now)
        if not firing.issues:
            await store.purges.rearm(conn, timer, firing.next_due)
            continue
        due_by, keep = now + ctx.settings.job_due, str(rule.keep)
        row: dict[str, Any] = {
            "job_id": firing.job_id,
            "subject_id": timer.subject_id,
            "owner": timer.owner,
            "category": timer.category,
            "purge_before": firing.before,
            "purge_keep": keep,
            "due_by": due_by,
        }
        fresh = await store.purges.insert_job(
            conn,
            firing.job_id,
            timer,
            due_by,
            now,
            now + ctx.settings.receipt_timeout,
            firing.before,
            keep,
        )
        await store.purges.mark_issued(conn, timer, firing.job_id, firing.before)
        if fresh:
            out.publish(ctx.settings.topics.privacy_jobs, purge_event(row, 1, now))


# --- receipts ------------------------------------------------------------------------------


async def on_purge_receipt(ctx: Context, tx: Tx, e: PurgeCompleted | PurgeFailed) -> None:
    """Close the purge job (or wait to retry it); a closed one re-arms the timer."""
    job = await store.jobs.job(tx.conn, e.data.job_id)
    if job is None or job["kind"] != "purge":
        tx.batch.reject(e, f"unknown purge job {e.data.job_id[:200]}")
        return
    if job["owner"] != e.data.owner:
        tx.batch.reject(e, f"receipt from {e.data.owner[:100]} for a job of {job['owner']}")
        return
    if job["status"] != "issued":
        return  # a late receipt of a job already closed
    now = ctx.clock.now()
    if isinstance(e, PurgeCompleted):
        await store.jobs.complete_job(tx.conn, job["job_id"], now, e.data.records_deleted)
    elif e.data.retryable:
        wait = domain.jobs.backoff(
            ctx.settings.retry_backoff, job["attempt"], ctx.settings.max_backoff
        )
        await store.jobs.retry_job(tx.conn, job["job_id"], e.data.error[:2000], now + wait)
        return
    else:  # the next round purges this round's records too
        await store.jobs.fail_job(tx.conn, job["job_id"], e.data.error[:2000])
    rule = ctx.rules.rolling().get(job["category"])
    due = await store.purges.timer_due_of_job(tx.conn, job["job_id"])
    if rule is not None and due is not None:
        next_due = domain.rolling.next_purge(rule, due, now)
        await store.purges.rearm_after_job(tx.conn, job["job_id"], next_due)
