"""Erasure and rectification requests: deadlines, status, and the outcome per category."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from shared.contract.events import CategoryOutcome
from shared.plumbing.db import Conn

INSERT_REQUEST = """
INSERT INTO requests (request_id, subject_id, kind, requested_at, deadline)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT (request_id) DO NOTHING
"""
REQUEST = "SELECT * FROM requests WHERE request_id = $1 FOR UPDATE"
REQUEST_READ = "SELECT * FROM requests WHERE request_id = $1"
EXTEND = """
UPDATE requests SET deadline = $2, extended = true, reason = $3, overdue = false
WHERE request_id = $1
"""
CANCEL_REQUEST = "UPDATE requests SET cancelled_at = $2 WHERE request_id = $1"
SET_REQUEST_STATUS = "UPDATE requests SET status = $2, overdue = $3 WHERE request_id = $1"
UPSERT_OUTCOMES = """
INSERT INTO request_outcomes (request_id, category, outcome, reason, until, owner)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[])
ON CONFLICT (request_id, category) DO UPDATE
SET outcome = EXCLUDED.outcome, reason = EXCLUDED.reason, until = EXCLUDED.until,
    owner = EXCLUDED.owner
"""
DELETE_OUTCOME = "DELETE FROM request_outcomes WHERE request_id = $1 AND category = $2"
OUTCOMES = """
SELECT category, outcome, reason, until, owner FROM request_outcomes
WHERE request_id = $1 ORDER BY category
"""
NEWLY_OVERDUE = """
SELECT request_id FROM requests
WHERE NOT overdue AND deadline < $1 AND status IN ('pending', 'in_progress')
  AND cancelled_at IS NULL
ORDER BY deadline LIMIT $2 FOR UPDATE SKIP LOCKED
"""
REQUEST_COUNTS = "SELECT kind, status, overdue, count(*) AS n FROM requests GROUP BY 1, 2, 3"
DUE_SOON = """
SELECT kind, count(*) AS n FROM requests
WHERE status IN ('pending', 'in_progress') AND deadline >= $1 AND deadline < $2 GROUP BY kind
"""
SUBJECT_REQUESTS = "SELECT * FROM requests WHERE subject_id = $1 ORDER BY requested_at"
OPEN_REQUESTS_DUE_BEFORE = """
SELECT * FROM requests
WHERE status IN ('pending', 'in_progress') AND cancelled_at IS NULL AND deadline < $1
  AND ($3::timestamptz IS NULL OR (deadline, request_id) > ($3, $4::text))
ORDER BY deadline, request_id LIMIT $2
"""


async def insert_request(
    conn: Conn, request_id: str, subject_id: str, kind: str, at: datetime, deadline: datetime
) -> bool:
    result: str = await conn.execute(INSERT_REQUEST, request_id, subject_id, kind, at, deadline)
    return result.endswith(" 1")


async def request(conn: Conn, request_id: str, lock: bool = True) -> asyncpg.Record | None:
    return await conn.fetchrow(REQUEST if lock else REQUEST_READ, request_id)


async def extend_request(conn: Conn, request_id: str, deadline: datetime, reason: str) -> None:
    await conn.execute(EXTEND, request_id, deadline, reason)


async def cancel_request(conn: Conn, request_id: str, at: datetime) -> None:
    await conn.execute(CANCEL_REQUEST, request_id, at)


async def set_request_status(conn: Conn, request_id: str, status: str, overdue: bool) -> None:
    await conn.execute(SET_REQUEST_STATUS, request_id, status, overdue)


async def put_outcomes(conn: Conn, request_id: str, outcomes: Sequence[CategoryOutcome]) -> None:
    if not outcomes:
        return
    await conn.execute(
        UPSERT_OUTCOMES,
        request_id,
        [o.category for o in outcomes],
        [o.outcome for o in outcomes],
        [o.reason for o in outcomes],
        [o.until for o in outcomes],
        [o.owner for o in outcomes],
    )


async def drop_outcome(conn: Conn, request_id: str, category: str) -> None:
    await conn.execute(DELETE_OUTCOME, request_id, category)


async def outcomes(conn: Conn, request_id: str) -> list[CategoryOutcome]:
    return [CategoryOutcome(**dict(r)) for r in await conn.fetch(OUTCOMES, request_id)]


async def newly_overdue(conn: Conn, now: datetime, limit: int) -> list[str]:
    return [r["request_id"] for r in await conn.fetch(NEWLY_OVERDUE, now, limit)]


async def request_counts(conn: Conn) -> dict[tuple[str, str, bool], int]:
    return {
        (r["kind"], r["status"], r["overdue"]): r["n"] for r in await conn.fetch(REQUEST_COUNTS)
    }


async def open_requests_due_before(
    conn: Conn, until: datetime, limit: int, after: tuple[datetime, str] | None = None
) -> list[asyncpg.Record]:
    """Open requests whose deadline falls before `until` (overdue ones included), soonest
    first by (deadline, request_id), from after the key `after`."""
    since, request_id = after if after is not None else (None, None)
    return list(await conn.fetch(OPEN_REQUESTS_DUE_BEFORE, until, limit, since, request_id))


async def requests_due_soon(conn: Conn, now: datetime, until: datetime) -> dict[str, int]:
    return {r["kind"]: r["n"] for r in await conn.fetch(DUE_SOON, now, until)}


async def subject_requests(conn: Conn, subject_id: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(SUBJECT_REQUESTS, subject_id))
