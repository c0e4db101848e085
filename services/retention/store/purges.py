"""Purge timers (rolling retention while open): arm, stop, claim when due, re-arm; purge jobs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.retention.domain.rolling import PurgeTimer
from shared.catalogue import RollingRule
from shared.plumbing.db import Conn

ARM = """
INSERT INTO purge_timers (subject_id, category, owner, due_at)
SELECT $1, x.category, x.owner, x.due_at
FROM unnest($2::text[], $3::text[], $4::timestamptz[]) AS x(category, owner, due_at)
ON CONFLICT (subject_id, category) DO NOTHING
"""
ARM_MISSING = """
INSERT INTO purge_timers (subject_id, category, owner, due_at)
SELECT s.subject_id, $1, $2,
       GREATEST(COALESCE(s.signed_up_at, $6) + make_interval($3, $4, 0, $5), $6)
FROM subjects s LEFT JOIN accounts a ON a.account_id = s.account_id
WHERE COALESCE(a.status, 'open') = 'open' AND s.erased_at IS NULL
ON CONFLICT (subject_id, category) DO NOTHING
"""
STOP_OTHERS = "UPDATE purge_timers SET status = 'stopped' WHERE category <> ALL($1::text[])"
STOP = "UPDATE purge_timers SET status = 'stopped' WHERE subject_id = ANY($1::text[])"
RESUME = """
UPDATE purge_timers SET status = 'pending', job_id = NULL, due_at = GREATEST(due_at, $2)
WHERE subject_id = ANY($1::text[]) AND status = 'stopped' AND category = ANY($3::text[])
"""
CLAIM_DUE = """
WITH due AS (
    SELECT subject_id, category FROM purge_timers
    WHERE status = 'pending' AND due_at <= $1
      AND NOT (subject_id || E'\\x1f' || category = ANY($3::text[]))
    ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
SELECT p.subject_id, p.category, p.owner, p.due_at, s.account_id
FROM purge_timers p JOIN due USING (subject_id, category)
LEFT JOIN subjects s ON s.subject_id = p.subject_id
"""
MARK_ISSUED = """
UPDATE purge_timers SET status = 'issued', job_id = $3, last_before = $4
WHERE subject_id = $1 AND category = $2
"""
REARM = """
UPDATE purge_timers SET status = 'pending', job_id = NULL, due_at = $3
WHERE subject_id = $1 AND category = $2 AND status <> 'stopped'
"""
REARM_AFTER_JOB = """
UPDATE purge_timers SET status = 'pending', job_id = NULL, due_at = $2
WHERE job_id = $1 AND status = 'issued'
"""
TIMER_OF_JOB = "SELECT due_at FROM purge_timers WHERE job_id = $1"
INSERT_JOB = """
INSERT INTO jobs (job_id, kind, subject_id, owner, category, mode, reason, due_by, issued_at,
                  last_issued_at, next_action_at, purge_before, purge_keep)
VALUES ($1, 'purge', $2, $3, $4, 'delete', 'retention_expired', $5, $6, $6, $7, $8, $9)
ON CONFLICT (job_id) DO NOTHING
RETURNING job_id
"""
SUBJECT_TIMERS = """
SELECT category, owner, due_at, status, job_id, last_before FROM purge_timers
WHERE subject_id = $1 ORDER BY category
"""
NEXT_DUE = """
SELECT category, min(due_at) AS next_due, count(*) FILTER (WHERE due_at <= $1) AS due
FROM purge_timers WHERE status = 'pending' GROUP BY category
"""


async def arm(conn: Conn, subject_id: str, plans: Sequence[tuple[str, str, datetime]]) -> None:
    """One purge timer per (category, owner, first due) unless the subject has it already."""
    if plans:
        await conn.execute(
            ARM,
            subject_id,
            [p[0] for p in plans],
            [p[1] for p in plans],
            [p[2] for p in plans],
        )


async def arm_missing(
    conn: Conn, category: str, owner: str, rule: RollingRule, now: datetime
) -> None:
    """Arm the category for every subject of an open account that has no timer (a new rule)."""
    keep = rule.keep
    await conn.execute(ARM_MISSING, category, owner, keep.years, keep.months, keep.days, now)


async def stop_others(conn: Conn, categories: Sequence[str]) -> None:
    """Stop the timers of categories no longer kept on a rolling limit."""
    await conn.execute(STOP_OTHERS, list(categories))


async def stop(conn: Conn, subject_ids: Sequence[str]) -> None:
    """The account closed: its closure timers take over."""
    await conn.execute(STOP, list(subject_ids))


async def resume(
    conn: Conn, subject_ids: Sequence[str], at: datetime, categories: Sequence[str]
) -> None:
    """The account reopened: stopped timers run again (a round already past is due at once)."""
    await conn.execute(RESUME, list(subject_ids), at, list(categories))


async def claim_due(
    conn: Conn, now: datetime, limit: int, exclude: Sequence[str] = ()
) -> list[PurgeTimer]:
    """Claim up to `limit` due purge timers (others' locks skipped; `exclude`: held keys)."""
    rows = await conn.fetch(CLAIM_DUE, now, limit, list(exclude))
    return [
        PurgeTimer(
            subject_id=r["subject_id"],
            account_id=r["account_id"],
            category=r["category"],
            owner=r["owner"],
            due_at=r["due_at"],
        )
        for r in rows
    ]


async def mark_issued(conn: Conn, timer: PurgeTimer, job_id: str, before: datetime) -> None:
    await conn.execute(MARK_ISSUED, timer.subject_id, timer.category, job_id, before)


async def rearm(conn: Conn, timer: PurgeTimer, due_at: datetime) -> None:
    await conn.execute(REARM, timer.subject_id, timer.category, due_at)


async def timer_due_of_job(conn: Conn, job_id: str) -> datetime | None:
    value: datetime | None = await conn.fetchval(TIMER_OF_JOB, job_id)
    return value


async def rearm_after_job(conn: Conn, job_id: str, due_at: datetime) -> None:
    """The purge is answered: its timer waits for the next round."""
    await conn.execute(REARM_AFTER_JOB, job_id, due_at)


async def insert_job(
    conn: Conn,
    job_id: str,
    timer: PurgeTimer,
    due_by: datetime,
    now: datetime,
    next_action_at: datetime,
    before: datetime,
    keep: str,
) -> bool:
    """Record the purge job; False when it existed (a replayed round)."""
    inserted = await conn.fetchval(
        INSERT_JOB,
        job_id,
        timer.subject_id,
        timer.owner,
        timer.category,
        due_by,
        now,
        next_action_at,
        before,
        keep,
    )
    return inserted is not None


async def subject_timers(conn: Conn, subject_id: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(SUBJECT_TIMERS, subject_id))


async def next_due(conn: Conn, at: datetime) -> list[asyncpg.Record]:
    """Per rolling category: the earliest pending purge, and how many are due by `at`."""
    return list(await conn.fetch(NEXT_DUE, at))
