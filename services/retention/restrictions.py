"""Restriction of processing (GDPR Art. 18) in retention: jobs to the owners, lifting jobs, their
receipts, and the holds that keep the data of grounds (b) and (c) until the lift.

Retention consumes `processing.restricted.v1` and `restriction.lifted.v1` themselves (not the
published state): they carry the grounds and a stable event id for the jobs' ids, and travel
keyed by subject, so a subject's restriction and its lift arrive in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from services.retention import domain, store, workflow
from services.retention.context import Context
from services.retention.domain.model import Hold
from services.retention.domain.restriction import HOLD_PREFIX
from shared.contract.events import (
    ProcessingRestricted,
    RestrictionCompleted,
    RestrictionFailed,
    RestrictionLifted,
)
from shared.plumbing.db import Conn
from shared.plumbing.handlers import Tx
from shared.plumbing.logging import get_logger

log = get_logger(__name__)
KINDS = ("restriction", "restriction_lift")


async def on_restricted(ctx: Context, tx: Tx, e: ProcessingRestricted) -> None:
    """Restrict each category the event reaches at its owner; (b), (c): hold its deletions."""
    grounds = e.data.grounds.value if e.data.grounds is not None else None
    pairs = domain.restriction.reach(ctx.rules, e.data.purposes, e.data.categories)
    keeps = domain.restriction.keeps_data(grounds)
    rows = [
        (
            target,
            category,
            ctx.rules.categories[category].owner,
            domain.restriction.hold_id(e.id, category) if keeps else None,
        )
        for target, category in pairs
    ]
    written = await store.restrictions.put(tx.conn, e.subject, grounds, e.id, e.time, rows)
    held = sorted({(category, hold_id) for category, hold_id in written if hold_id is not None})
    for category, hold_id in held:
        hold = Hold(
            hold_id=hold_id,
            scope="subject",
            subject_id=e.subject,
            categories=(category,),
            reason=domain.restriction.hold_reason(grounds or ""),
        )
        await store.holds.place_hold(tx.conn, hold, e.time)
    categories = sorted({c for c, _ in written})
    await _release_stale(tx.conn, e.subject, categories, e.time)
    await _issue(ctx, tx, "restriction", e.id, e.subject, categories, grounds)


async def on_lifted(ctx: Context, tx: Tx, e: RestrictionLifted) -> None:
    """Lift at the owners what no restriction covers any more; release its held deletions."""
    lifted = await store.restrictions.lift(
        tx.conn, e.subject, [*e.data.purposes, *e.data.categories], e.time
    )
    if not lifted:
        return
    categories = sorted({c for c, _ in lifted})
    await _release_stale(tx.conn, e.subject, categories, e.time)
    still = await store.restrictions.active_categories(tx.conn, e.subject)
    free = [c for c in categories if c not in still]
    await _issue(ctx, tx, "restriction_lift", e.id, e.subject, free, None)


async def _release_stale(
    conn: Conn, subject_id: str, categories: Sequence[str], at: datetime
) -> None:
    """Release the restriction holds no active restriction names; their timers fire again."""
    stale = await store.restrictions.stale_holds(conn, subject_id, HOLD_PREFIX, categories)
    for hold_id in stale:
        await store.holds.release_hold(conn, hold_id, "subject", subject_id, None, at)
    if stale:
        released = await store.timers.unblock(conn, stale)
        log.info("restriction_holds_released", holds=len(stale), timers_due_again=released)


async def _issue(
    ctx: Context,
    tx: Tx,
    kind: str,
    event_id: str,
    subject_id: str,
    categories: Sequence[str],
    grounds: str | None,
) -> None:
    now = ctx.clock.now()
    rows: list[dict[str, Any]] = [
        {
            "job_id": domain.jobs.job_id_for(kind, event_id, category),
            "subject_id": subject_id,
            "owner": ctx.rules.categories[category].owner,
            "category": category,
            "reason": grounds,
            "due_by": now + ctx.settings.job_due,
        }
        for category in categories
    ]
    fresh = await store.jobs.insert_jobs(
        tx.conn, kind, now, now + ctx.settings.receipt_timeout, rows
    )
    for row in rows:
        if row["job_id"] in fresh:
            event = workflow.restriction_event(kind, row, 1, now)
            tx.outbox.publish(ctx.settings.topics.privacy_jobs, event)


async def on_receipt(ctx: Context, tx: Tx, e: RestrictionCompleted | RestrictionFailed) -> None:
    """Close a restriction (or lifting) job on its receipt; a retryable failure waits, then
    the job is issued again."""
    job = await store.jobs.job(tx.conn, e.data.job_id)
    if job is None or job["kind"] not in KINDS:
        tx.batch.reject(e, f"unknown job {e.data.job_id[:200]}")
        return
    if job["owner"] != e.data.owner:
        tx.batch.reject(e, f"receipt from {e.data.owner[:100]} for a job of {job['owner']}")
        return
    if job["status"] != "issued":
        return  # a late receipt of a job already closed
    now = ctx.clock.now()
    if isinstance(e, RestrictionCompleted):
        await store.jobs.complete_job(tx.conn, job["job_id"], now, 0)
    elif e.data.retryable:
        wait = domain.jobs.backoff(
            ctx.settings.retry_backoff, job["attempt"], ctx.settings.max_backoff
        )
        await store.jobs.retry_job(tx.conn, job["job_id"], e.data.error[:2000], now + wait)
    else:
        await store.jobs.fail_job(tx.conn, job["job_id"], e.data.error[:2000])
