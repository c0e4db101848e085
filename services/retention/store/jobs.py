"""Deletion and rectification jobs: issue, close on a receipt, re-issue, flag overdue."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from shared.plumbing.db import Conn

INSERT_JOBS = """
INSERT INTO jobs (job_id, kind, subject_id, owner, category, mode, reason, request_id,
                  due_by, issued_at, last_issued_at, next_action_at, fields, timer_id)
SELECT x.job_id, $1, x.subject_id, x.owner, x.category, x.mode, x.reason, x.request_id,
       x.due_by, $2, $2, $3, x.fields, x.timer_id
FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
            $10::text[], $11::timestamptz[], $12::jsonb[], $13::bigint[])
     AS x(job_id, subject_id, owner, category, mode, reason, request_id, due_by, fields,
          timer_id)
ON CONFLICT (job_id) DO NOTHING
RETURNING job_id
"""
JOB = "SELECT * FROM jobs WHERE job_id = $1 FOR UPDATE"
COMPLETE_JOB = """
UPDATE jobs SET status = 'completed', completed_at = $2, records_deleted = $3,
    next_action_at = NULL, fields = NULL
WHERE job_id = $1
"""
FAIL_JOB = """
UPDATE jobs SET status = 'failed', last_error = $2, next_action_at = NULL, fields = NULL
WHERE job_id = $1
"""
CANCEL_RECTIFICATIONS = """
UPDATE jobs SET status = 'cancelled', next_action_at = NULL, fields = NULL
WHERE kind = 'rectification' AND status = 'issued' AND subject_id = $1
  AND category = ANY($2::text[])
RETURNING request_id, category, owner
"""
RETRY_JOB = "UPDATE jobs SET last_error = $2, next_action_at = $3 WHERE job_id = $1"
CLAIM_REISSUE = """
SELECT * FROM jobs WHERE status = 'issued' AND next_action_at <= $1 AND job_id <> ALL($3::text[])
ORDER BY next_action_at LIMIT $2 FOR UPDATE SKIP LOCKED
"""
MARK_REISSUED = """
UPDATE jobs j SET attempt = x.attempt, last_issued_at = $3, next_action_at = x.next_at
FROM unnest($1::text[], $2::int[], $4::timestamptz[]) AS x(job_id, attempt, next_at)
WHERE j.job_id = x.job_id
"""
FLAG_OVERDUE = """
UPDATE jobs SET overdue = true WHERE status = 'issued' AND NOT overdue AND due_by < $1
"""
COUNT_OVERDUE = "SELECT count(*) FROM jobs WHERE status = 'issued' AND overdue"
LIST_JOBS = """
SELECT job_id, kind, subject_id, owner, category, mode, reason, request_id, due_by, status,
       attempt, issued_at, last_issued_at, overdue, last_error, completed_at, records_deleted
FROM jobs
WHERE ($1::boolean IS NULL OR overdue = $1) AND ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR subject_id = $3) AND ($4::text IS NULL OR request_id = $4)
  AND ($6::timestamptz IS NULL OR (issued_at, job_id) > ($6, $7::text))
ORDER BY issued_at, job_id LIMIT $5
"""
OPEN_REQUEST_JOBS = "SELECT count(*) FROM jobs WHERE request_id = $1 AND status = 'issued'"


async def insert_jobs(
    conn: Conn,
    kind: str,
    now: datetime,
    next_action_at: datetime,
    rows: Sequence[dict[str, Any]],
) -> set[str]:
    """Insert jobs (dicts of the columns); returns the ids that were new."""
    if not rows:
        return set()
    inserted = await conn.fetch(
        INSERT_JOBS,
        kind,
        now,
        next_action_at,
        [r["job_id"] for r in rows],
        [r["subject_id"] for r in rows],
        [r["owner"] for r in rows],
        [r["category"] for r in rows],
        [r.get("mode") for r in rows],
        [r.get("reason") for r in rows],
        [r.get("request_id") for r in rows],
        [r["due_by"] for r in rows],
        [orjson.dumps(r["fields"]).decode() if r.get("fields") is not None else None for r in rows],
        [r.get("timer_id") for r in rows],
    )
    return {r["job_id"] for r in inserted}


async def job(conn: Conn, job_id: str) -> asyncpg.Record | None:
    """The job, locked for this transaction."""
    return await conn.fetchrow(JOB, job_id)


async def complete_job(conn: Conn, job_id: str, at: datetime, records: int) -> None:
    await conn.execute(COMPLETE_JOB, job_id, at, records)


async def cancel_rectifications(
    conn: Conn, subject_id: str, categories: Sequence[str]
) -> list[asyncpg.Record]:
    """Cancel the subject's open rectification jobs of `categories`, forgetting their values;
    returns (request_id, category, owner) of each."""
    return list(await conn.fetch(CANCEL_RECTIFICATIONS, subject_id, list(categories)))


async def fail_job(conn: Conn, job_id: str, error: str) -> None:
    await conn.execute(FAIL_JOB, job_id, error)


async def retry_job(conn: Conn, job_id: str, error: str, at: datetime) -> None:
    await conn.execute(RETRY_JOB, job_id, error, at)


async def claim_reissue(
    conn: Conn, now: datetime, limit: int, exclude: Sequence[str] = ()
) -> list[asyncpg.Record]:
    """Issued jobs whose receipt is late or whose retry wait is over (but `exclude`), locked."""
    return list(await conn.fetch(CLAIM_REISSUE, now, limit, list(exclude)))


async def mark_reissued(
    conn: Conn,
    job_ids: Sequence[str],
    attempts: Sequence[int],
    now: datetime,
    next_at: Sequence[datetime],
) -> None:
    await conn.execute(MARK_REISSUED, list(job_ids), list(attempts), now, list(next_at))


async def flag_overdue(conn: Conn, now: datetime) -> int:
    status: str = await conn.execute(FLAG_OVERDUE, now)
    return int(status.split()[-1])


async def count_overdue(conn: Conn) -> int:
    value: int = await conn.fetchval(COUNT_OVERDUE)
    return value


async def list_jobs(
    conn: Conn,
    *,
    overdue: bool | None = None,
    status: str | None = None,
    subject_id: str | None = None,
    request_id: str | None = None,
    limit: int = 1000,
    after: tuple[datetime, str] | None = None,
) -> list[asyncpg.Record]:
    """Jobs matching the filters by (issued_at, job_id), from after the key `after`."""
    since, job_id = after if after is not None else (None, None)
    return list(
        await conn.fetch(LIST_JOBS, overdue, status, subject_id, request_id, limit, since, job_id)
    )


async def open_request_jobs(conn: Conn, request_id: str) -> int:
    value: int = await conn.fetchval(OPEN_REQUEST_JOBS, request_id)
    return value
