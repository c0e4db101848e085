"""The background loop: fire due timers, re-issue unanswered jobs, flag what is overdue.

Every step claims its rows with `FOR UPDATE SKIP LOCKED` in batches, so replicas share the work
and never do the same row twice; jobs go out through the outbox in the claiming transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg
from prometheus_client import Counter, Gauge

from services.retention import domain, rolling, store, workflow
from services.retention.context import Context
from services.retention.domain.model import Timer
from shared.plumbing import outbox
from shared.plumbing.logging import get_logger
from shared.plumbing.loops import Items, Loop
from shared.plumbing.metrics import REQUESTS, REQUESTS_DUE_SOON
from shared.plumbing.outbox import Outbox
from shared.plumbing.seams import Seam, reach

log = get_logger(__name__)


JOBS_ISSUED = Counter("pp_retention_jobs_issued_total", "Jobs issued by due timers", ["service"])
TIMERS_BLOCKED = Counter(
    "pp_retention_timers_blocked_total", "Due timers held back by a legal hold", ["service"]
)
JOBS_REISSUED = Counter(
    "pp_retention_jobs_reissued_total",
    "Jobs issued again (no receipt, or a retryable failure)",
    ["service"],
)
JOBS_OVERDUE = Gauge("pp_retention_jobs_overdue", "Issued jobs past their due-by", ["service"])
REQUEST_KINDS = ("erasure", "rectification")
REQUEST_STATUSES = ("pending", "in_progress", "completed", "cancelled", "partially_completed")
RULES_LOCK = "SELECT pg_advisory_xact_lock(hashtext('retention-rules'))"
GAUGE_EVERY = 2.0

after_fire: Seam | None = None
"""Test seam (shared.plumbing.seams): inside a timer batch's transaction, before its commit."""


def loops() -> list[Loop[Context]]:
    """The retention loops: timers (once the rules in force are applied) and request gauges."""
    rules_applied = False

    async def fire_timers(ctx: Context, items: Items) -> bool:
        nonlocal rules_applied
        if not rules_applied:  # no timer fires before the rules in force are applied
            await apply_rules(ctx.pool, ctx)
            rules_applied = True
        return await tick(ctx.pool, ctx, ctx.settings.db_schema, items)

    async def report(ctx: Context, _: Items) -> bool:
        await update_gauges(ctx.pool, ctx)
        return False

    return [
        Loop("retention-timers", fire_timers, lambda ctx: ctx.settings.poll_interval),
        Loop("retention-gauges", report, lambda _: GAUGE_EVERY),
    ]


async def tick(pool: asyncpg.Pool, ctx: Context, schema: str, items: Items | None = None) -> bool:
    """One pass at the current time; True when a batch was full (more work waiting)."""
    now = ctx.clock.now()
    items = items or Items(ctx.settings.service_name, "retention-timers")
    # several claimers at once: one builds events while another waits on the database
    fired = await asyncio.gather(
        *(fire_batch(pool, ctx, schema, now, items) for _ in range(ctx.settings.fire_concurrency))
    )
    busy = any(fired)
    busy = await rolling.fire_batch(pool, ctx, schema, now, items) or busy
    busy = await reissue_batch(pool, ctx, schema, now, items) or busy
    await flag_overdue(pool, ctx, schema, now)
    return busy


async def fire_batch(
    pool: asyncpg.Pool, ctx: Context, schema: str, now: datetime, items: Items | None = None
) -> bool:
    """Claim up to one batch of due timers and issue (or block) them in one transaction.

    A timer whose firing fails (not an outage) goes back to pending and is held back with
    back-off, while the rest of the batch fires.
    """
    items = items or Items(ctx.settings.service_name, "retention-timers")
    out = Outbox()
    counts = [0, 0]

    async def fire(some: Sequence[tuple[Timer, datetime | None]]) -> None:
        part = Outbox()
        issued, blocked = await workflow.fire(conn, ctx, part, some, now)
        out.rows.extend(part.rows)
        counts[0] += issued
        counts[1] += blocked

    async with pool.acquire() as conn, conn.transaction():
        held = [int(key.removeprefix("timer:")) for key in items.held() if key.startswith("timer:")]
        claimed = await store.timers.claim_due(conn, now, ctx.settings.claim_batch, held)
        if not claimed:
            return False
        failed = await items.each(conn, claimed, lambda c: f"timer:{c[0].id}", fire)
        if failed:
            await store.timers.unclaim(conn, [timer.id for timer, _ in failed])
        await outbox.write(conn, out.rows, schema)
        await reach(after_fire)
    JOBS_ISSUED.labels(ctx.settings.service_name).inc(counts[0])
    TIMERS_BLOCKED.labels(ctx.settings.service_name).inc(counts[1])
    return len(claimed) == ctx.settings.claim_batch


async def reissue_batch(
    pool: asyncpg.Pool, ctx: Context, schema: str, now: datetime, items: Items | None = None
) -> bool:
    """Re-issue jobs whose receipt is late or whose retry wait is over (a job that fails to
    is held back while the others go)."""
    items = items or Items(ctx.settings.service_name, "retention-timers")
    out = Outbox()

    async def reissue(some: Sequence[asyncpg.Record]) -> None:
        part = Outbox()
        await workflow.reissue(conn, ctx, part, some, now)
        out.rows.extend(part.rows)

    async with pool.acquire() as conn, conn.transaction():
        held = [key.removeprefix("job:") for key in items.held() if key.startswith("job:")]
        rows = await store.jobs.claim_reissue(conn, now, ctx.settings.claim_batch, held)
        if not rows:
            return False
        failed = await items.each(conn, rows, lambda r: f"job:{r['job_id']}", reissue)
        await outbox.write(conn, out.rows, schema)
    JOBS_REISSUED.labels(ctx.settings.service_name).inc(len(rows) - len(failed))
    log.info("jobs_reissued", count=len(rows) - len(failed))
    return len(rows) == ctx.settings.claim_batch


async def flag_overdue(pool: asyncpg.Pool, ctx: Context, schema: str, now: datetime) -> None:
    """Flag jobs past due-by; report requests past their deadline (once each)."""
    out = Outbox()
    async with pool.acquire() as conn, conn.transaction():
        flagged = await store.jobs.flag_overdue(conn, now)
        if flagged:
            log.warning("jobs_overdue", count=flagged)
        for request_id in await store.requests.newly_overdue(conn, now, ctx.settings.claim_batch):
            await workflow.publish_status(conn, ctx, out, request_id, now)
        await outbox.write(conn, out.rows, schema)


async def update_gauges(pool: asyncpg.Pool, ctx: Context) -> None:
    """Overdue jobs, and requests by kind, status and overdue flag (for alerts)."""
    service = ctx.settings.service_name
    now = ctx.clock.now()
    async with pool.acquire() as conn:
        JOBS_OVERDUE.labels(service).set(await store.jobs.count_overdue(conn))
        counts = await store.requests.request_counts(conn)
        soon = await store.requests.requests_due_soon(conn, now, now + timedelta(days=7))
    for kind in REQUEST_KINDS:
        for status in REQUEST_STATUSES:
            for overdue in ("true", "false"):
                value = counts.get((kind, status, overdue == "true"), 0)
                REQUESTS.labels(service, kind, status, overdue).set(value)
        REQUESTS_DUE_SOON.labels(service, kind).set(soon.get(kind, 0))


async def apply_rules(pool: asyncpg.Pool, ctx: Context) -> None:
    """Compare the rules with those last applied; on a change recompute pending timers."""
    digest = domain.rules.rules_digest(ctx.rules)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(RULES_LOCK)
        previous = await store.rules.rules_state(conn)
        if previous is not None and previous[0] == digest:
            return
        await rolling.apply_rules(conn, ctx)
        moved = 0
        after = 0
        while rows := await store.rules.recomputable_timers(conn, after, 5000):
            after = rows[-1]["id"]
            changes = [
                (r["id"], due, ctx.rules.categories[r["category"]].owner)
                for r in rows
                if (
                    due := domain.rules.recompute_due(
                        ctx.rules, r["category"], r["crm_retention_days"], r["base_at"]
                    )
                )
                is not None
            ]
            moved += await store.rules.set_dues(
                conn, [c[0] for c in changes], [c[1] for c in changes], [c[2] for c in changes]
            )
        await store.rules.save_rules(
            conn, digest, domain.rules.rules_json(ctx.rules), ctx.clock.now()
        )
    if previous is not None:
        log.warning(
            "retention_rules_changed",
            previous_digest=previous[0],
            digest=digest,
            timers_rescheduled=moved,
        )
    else:
        log.info("retention_rules_recorded", digest=digest)
