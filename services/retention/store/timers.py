"""Durable timers: insert, supersede, cancel, claim when due, block under a hold, unblock."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.retention.domain.model import Timer, TimerPlan
from shared.plumbing import tracing
from shared.plumbing.db import Conn

INSERT_TIMERS = """
INSERT INTO timers (subject_id, category, owner, mode, reason, cause, request_id, base_at,
                    due_at, created_at, cause_key, traceparent, tracestate)
SELECT x.subject_id, x.category, x.owner, x.mode, x.reason, x.cause, $7, x.base_at, x.due_at, $8,
       x.cause_key, $12, $13
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $9::timestamptz[], $10::timestamptz[], $11::text[])
     AS x(subject_id, category, owner, mode, reason, cause, base_at, due_at, cause_key)
"""
HAS_CLOSURE_TIMERS = """
SELECT EXISTS (SELECT 1 FROM timers WHERE subject_id = $1 AND cause = 'closure'
               AND status <> 'cancelled')
"""
CANCEL_CLOSURE_TIMERS = """
UPDATE timers SET status = 'cancelled'
WHERE subject_id = ANY($1::text[]) AND cause = 'closure' AND status IN ('pending', 'blocked')
"""
SUPERSEDE = """
UPDATE timers SET status = 'superseded', superseded_by = $3
WHERE subject_id = $1 AND category = ANY($2::text[]) AND cause = 'closure'
  AND status IN ('pending', 'blocked')
"""
RESTORE_SUPERSEDED = """
UPDATE timers SET status = 'pending', superseded_by = NULL, blocked_by = '{}'
WHERE superseded_by = $1 AND status = 'superseded' AND category = ANY($2::text[])
"""
CANCEL_REQUEST_TIMERS = """
UPDATE timers SET status = 'cancelled'
WHERE request_id = $1 AND status IN ('pending', 'blocked')
RETURNING category
"""
CRM_TIMERS_OF_ACCOUNT = """
SELECT t.id, t.category, t.base_at FROM timers t JOIN subjects s ON s.subject_id = t.subject_id
WHERE s.account_id = $1 AND t.status IN ('pending', 'blocked')
  AND t.cause IN ('closure', 'obligation') AND t.category = ANY($2::text[])
"""
UNCLAIM = "UPDATE timers SET status = 'pending', fired_at = NULL WHERE id = ANY($1::bigint[])"
CLAIM_DUE = """
WITH fired AS (
    -- ARRAY(...) makes the update find its rows by primary key (no join over all timers)
    UPDATE timers t SET status = 'fired', fired_at = $1, blocked_by = '{}'
    WHERE t.id = ANY(ARRAY(
        SELECT id FROM timers WHERE status = 'pending' AND due_at <= $1 AND id <> ALL($3::bigint[])
        ORDER BY due_at, id LIMIT $2 FOR UPDATE SKIP LOCKED
    ))
    RETURNING t.id, t.subject_id, t.category, t.owner, t.mode, t.reason, t.request_id, t.due_at,
              t.cause, t.base_at, t.cause_key, t.traceparent, t.tracestate
)
SELECT f.*, s.account_id, r.deadline
FROM fired f
LEFT JOIN subjects s ON s.subject_id = f.subject_id
LEFT JOIN requests r ON r.request_id = f.request_id
"""
MARK_BLOCKED = """
UPDATE timers t SET status = 'blocked', fired_at = NULL, blocked_by = string_to_array(x.holds, ',')
FROM unnest($1::bigint[], $2::text[]) AS x(id, holds) WHERE t.id = x.id
"""
UNBLOCK = """
UPDATE timers SET status = 'pending', blocked_by = '{}'
WHERE status = 'blocked' AND blocked_by && $1::text[]
"""
SUBJECT_TIMERS = """
SELECT t.id, t.subject_id, s.account_id, t.category, t.owner, t.mode, t.reason, t.cause,
       t.request_id, t.due_at, t.status, t.blocked_by, j.job_id, t.fired_at
FROM timers t LEFT JOIN subjects s ON s.subject_id = t.subject_id
LEFT JOIN jobs j ON j.subject_id = t.subject_id AND j.timer_id = t.id
WHERE t.subject_id = $1 ORDER BY t.due_at, t.id
"""
OPEN_TIMERS_PAGE = """
SELECT t.id, t.subject_id, s.account_id, t.category, t.owner, t.mode, t.reason, t.request_id,
       t.due_at
FROM timers t LEFT JOIN subjects s ON s.subject_id = t.subject_id
WHERE t.status IN ('pending', 'blocked') AND t.due_at <= $1 AND t.id > $2
ORDER BY t.id LIMIT $3
"""
OBLIGATION_UNTIL = """
SELECT due_at FROM timers
WHERE request_id = $1 AND category = $2 AND cause = 'obligation'
  AND status IN ('pending', 'blocked')
ORDER BY due_at DESC LIMIT 1
"""


async def insert_timers(
    conn: Conn,
    subject_ids: Sequence[str],
    plans: Sequence[TimerPlan],
    now: datetime,
    request_id: str | None = None,
) -> None:
    """Insert one timer per (subject, plan) pair given side by side; each keeps the trace
    context of the event being handled, for the job it issues later."""
    if not plans:
        return
    trace = tracing.outgoing()
    await conn.execute(
        INSERT_TIMERS,
        list(subject_ids),
        [p.category for p in plans],
        [p.owner for p in plans],
        [p.mode for p in plans],
        [p.reason for p in plans],
        [p.cause for p in plans],
        request_id,
        now,
        [p.base_at for p in plans],
        [p.due_at for p in plans],
        [p.cause_key for p in plans],
        trace.get("traceparent"),
        trace.get("tracestate"),
    )


async def has_closure_timers(conn: Conn, subject_id: str) -> bool:
    """True when the subject has closure timers in any state but cancelled."""
    found: bool = await conn.fetchval(HAS_CLOSURE_TIMERS, subject_id)
    return found


async def cancel_closure_timers(conn: Conn, subject_ids: Sequence[str]) -> None:
    await conn.execute(CANCEL_CLOSURE_TIMERS, list(subject_ids))


async def supersede(
    conn: Conn, subject_id: str, categories: Sequence[str], request_id: str
) -> None:
    """An erasure takes over the subject's closure timers for these categories."""
    await conn.execute(SUPERSEDE, subject_id, list(categories), request_id)


async def restore_superseded(conn: Conn, request_id: str, categories: Sequence[str]) -> None:
    """A cancelled erasure gives the closure schedule back for what it had not issued."""
    await conn.execute(RESTORE_SUPERSEDED, request_id, list(categories))


async def cancel_request_timers(conn: Conn, request_id: str) -> list[str]:
    """Cancel what a request has not issued yet; returns the categories concerned."""
    return [r["category"] for r in await conn.fetch(CANCEL_REQUEST_TIMERS, request_id)]


async def account_timers(
    conn: Conn, account_id: str, categories: Sequence[str]
) -> list[asyncpg.Record]:
    return list(await conn.fetch(CRM_TIMERS_OF_ACCOUNT, account_id, list(categories)))


def _timer(row: asyncpg.Record) -> Timer:
    return Timer(
        id=row["id"],
        subject_id=row["subject_id"],
        account_id=row["account_id"],
        category=row["category"],
        owner=row["owner"],
        mode=row["mode"],
        reason=row["reason"],
        request_id=row["request_id"],
        due_at=row["due_at"],
        cause=row.get("cause") or "",
        base_at=row.get("base_at"),
        cause_key=row.get("cause_key"),
        trace={k: row[k] for k in tracing.TRACE_ATTRIBUTES if row.get(k) is not None},
    )


async def claim_due(
    conn: Conn, now: datetime, limit: int, exclude: Sequence[int] = ()
) -> list[tuple[Timer, datetime | None]]:
    """Claim up to `limit` due timers (but `exclude`) as fired (others' locks skipped), with
    request deadlines.

    The ones a hold turns out to cover are then marked blocked in the same transaction.
    """
    rows = await conn.fetch(CLAIM_DUE, now, limit, list(exclude))
    return [(_timer(r), r["deadline"]) for r in rows]


async def unclaim(conn: Conn, ids: Sequence[int]) -> None:
    """Timers claimed in this transaction whose firing failed: pending again, to retry later."""
    await conn.execute(UNCLAIM, list(ids))


async def mark_blocked(conn: Conn, ids: Sequence[int], holds: Sequence[Sequence[str]]) -> None:
    if ids:
        await conn.execute(MARK_BLOCKED, list(ids), [",".join(h) for h in holds])


async def unblock(conn: Conn, hold_ids: Sequence[str]) -> int:
    """Blocked timers of released holds become pending again (the loop re-checks holds)."""
    status: str = await conn.execute(UNBLOCK, list(hold_ids))
    return int(status.split()[-1])


async def subject_timers(conn: Conn, subject_id: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(SUBJECT_TIMERS, subject_id))


async def open_timers_page(conn: Conn, at: datetime, after_id: int, limit: int) -> list[Timer]:
    """Pending or blocked timers due by `at`, a page at a time (dry run over all subjects)."""
    return [_timer(r) for r in await conn.fetch(OPEN_TIMERS_PAGE, at, after_id, limit)]


def timer_from_row(row: asyncpg.Record) -> Timer:
    return _timer(row)


async def obligation_until(conn: Conn, request_id: str, category: str) -> datetime | None:
    value: datetime | None = await conn.fetchval(OBLIGATION_UNTIL, request_id, category)
    return value
