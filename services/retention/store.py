"""PostgreSQL access for retention: SQL constants with `$n` parameters; methods take a conn."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from services.retention.domain import (
    GENESIS,
    Certificate,
    Hold,
    Timer,
    TimerPlan,
    certificate_hash,
)
from shared.contract.events import CategoryOutcome
from shared.plumbing.db import Conn

# --- rules --------------------------------------------------------------------------------

RULES_STATE = "SELECT digest, rules FROM rules_state WHERE id = 1"
SAVE_RULES = """
INSERT INTO rules_state (id, digest, rules, loaded_at) VALUES (1, $1, $2::jsonb, $3)
ON CONFLICT (id) DO UPDATE SET digest = $1, rules = $2::jsonb, loaded_at = $3
"""
RECOMPUTABLE = """
SELECT t.id, t.category, t.base_at, a.crm_retention_days
FROM timers t
LEFT JOIN subjects s ON s.subject_id = t.subject_id
LEFT JOIN accounts a ON a.account_id = s.account_id
WHERE t.status IN ('pending', 'blocked') AND t.cause IN ('closure', 'obligation')
  AND t.base_at IS NOT NULL AND t.id > $1
ORDER BY t.id LIMIT $2
"""
SET_DUES = """
UPDATE timers t SET due_at = x.due_at, owner = x.owner
FROM unnest($1::bigint[], $2::timestamptz[], $3::text[]) AS x(id, due_at, owner)
WHERE t.id = x.id AND (t.due_at <> x.due_at OR t.owner <> x.owner)
"""


async def rules_state(conn: Conn) -> tuple[str, str] | None:
    """The digest and JSON of the rules last applied, if any."""
    row = await conn.fetchrow(RULES_STATE)
    return None if row is None else (row["digest"], row["rules"])


async def save_rules(conn: Conn, digest: str, rules_json: str, now: datetime) -> None:
    await conn.execute(SAVE_RULES, digest, rules_json, now)


async def recomputable_timers(conn: Conn, after_id: int, limit: int) -> list[asyncpg.Record]:
    """Pending closure/obligation timers (with the account's terms), by id from `after_id`."""
    return list(await conn.fetch(RECOMPUTABLE, after_id, limit))


async def set_dues(
    conn: Conn, ids: Sequence[int], dues: Sequence[datetime], owners: Sequence[str]
) -> int:
    """Move timers to new due times; returns how many changed."""
    status: str = await conn.execute(SET_DUES, list(ids), list(dues), list(owners))
    return int(status.split()[-1])


# --- accounts and subjects ----------------------------------------------------------------

UPSERT_SUBJECT = """
INSERT INTO subjects (subject_id, account_id, signed_up_at) VALUES ($1, $2, $3)
ON CONFLICT (subject_id) DO UPDATE SET account_id = $2,
    signed_up_at = COALESCE(subjects.signed_up_at, $3)
"""
ENSURE_SUBJECT = """
INSERT INTO subjects (subject_id, account_id) VALUES ($1, $2) ON CONFLICT (subject_id) DO NOTHING
"""
ENSURE_ACCOUNT = "INSERT INTO accounts (account_id) VALUES ($1) ON CONFLICT DO NOTHING"
ACCOUNT = "SELECT * FROM accounts WHERE account_id = $1"
LOCK_ACCOUNT = "SELECT * FROM accounts WHERE account_id = $1 FOR UPDATE"
SUBJECT = """
SELECT s.subject_id, s.account_id, s.erased_at, a.status, a.closed_at, a.crm_retention_days
FROM subjects s LEFT JOIN accounts a ON a.account_id = s.account_id WHERE s.subject_id = $1
"""
ACCOUNT_SUBJECTS = "SELECT subject_id, erased_at FROM subjects WHERE account_id = $1"
SET_LIFECYCLE = """
UPDATE accounts SET status = $2, closed_at = $3, lifecycle_time = $4
WHERE account_id = $1 AND (lifecycle_time IS NULL OR lifecycle_time <= $4)
"""
SET_TERMS = """
UPDATE accounts SET plan = $2, crm_retention_days = $3, terms_time = $4
WHERE account_id = $1 AND (terms_time IS NULL OR terms_time <= $4)
"""
MARK_ERASED = "UPDATE subjects SET erased_at = COALESCE(erased_at, $2) WHERE subject_id = $1"


async def upsert_subject(conn: Conn, subject_id: str, account_id: str, at: datetime) -> None:
    await conn.execute(ENSURE_ACCOUNT, account_id)
    await conn.execute(UPSERT_SUBJECT, subject_id, account_id, at)


async def ensure_subject(conn: Conn, subject_id: str, account_id: str) -> None:
    """Record the subject's account when no sign-up told us (a closure names it too)."""
    await conn.execute(ENSURE_ACCOUNT, account_id)
    await conn.execute(ENSURE_SUBJECT, subject_id, account_id)


async def account(conn: Conn, account_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(ACCOUNT, account_id)


async def lock_account(conn: Conn, account_id: str) -> asyncpg.Record | None:
    """The account row, locked until commit: a sign-up and its account's closure handled at
    once (other partitions, other replicas) must see each other, or a subject gets no timers."""
    return await conn.fetchrow(LOCK_ACCOUNT, account_id)


async def subject(conn: Conn, subject_id: str) -> asyncpg.Record | None:
    """The subject with its account's status, closure and terms."""
    return await conn.fetchrow(SUBJECT, subject_id)


async def account_subjects(conn: Conn, account_id: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(ACCOUNT_SUBJECTS, account_id))


async def set_lifecycle(
    conn: Conn, account_id: str, status: str, closed_at: datetime | None, at: datetime
) -> bool:
    """Apply an open/closed change unless a newer lifecycle event was already applied."""
    await conn.execute(ENSURE_ACCOUNT, account_id)
    result: str = await conn.execute(SET_LIFECYCLE, account_id, status, closed_at, at)
    return result.endswith(" 1")


async def set_terms(conn: Conn, account_id: str, plan: str, days: int, at: datetime) -> bool:
    """Apply subscription terms unless newer ones were already applied."""
    await conn.execute(ENSURE_ACCOUNT, account_id)
    result: str = await conn.execute(SET_TERMS, account_id, plan, days, at)
    return result.endswith(" 1")


async def mark_erased(conn: Conn, subject_id: str, at: datetime) -> None:
    await conn.execute(MARK_ERASED, subject_id, at)


# --- timers -------------------------------------------------------------------------------

INSERT_TIMERS = """
INSERT INTO timers (subject_id, category, owner, mode, reason, cause, request_id, base_at,
                    due_at, created_at)
SELECT x.subject_id, x.category, x.owner, x.mode, x.reason, x.cause, $7, x.base_at, x.due_at, $8
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $9::timestamptz[], $10::timestamptz[])
     AS x(subject_id, category, owner, mode, reason, cause, base_at, due_at)
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
CLAIM_DUE = """
WITH fired AS (
    -- ARRAY(...) makes the update find its rows by primary key (no join over all timers)
    UPDATE timers t SET status = 'fired', fired_at = $1, blocked_by = '{}'
    WHERE t.id = ANY(ARRAY(
        SELECT id FROM timers WHERE status = 'pending' AND due_at <= $1
        ORDER BY due_at, id LIMIT $2 FOR UPDATE SKIP LOCKED
    ))
    RETURNING t.id, t.subject_id, t.category, t.owner, t.mode, t.reason, t.request_id, t.due_at
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
    """Insert one timer per (subject, plan) pair given side by side."""
    if not plans:
        return
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
    )


async def claim_due(conn: Conn, now: datetime, limit: int) -> list[tuple[Timer, datetime | None]]:
    """Claim up to `limit` due timers as fired (others' locks skipped), with request deadlines.

    The ones a hold turns out to cover are then marked blocked in the same transaction.
    """
    return [(_timer(r), r["deadline"]) for r in await conn.fetch(CLAIM_DUE, now, limit)]


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


# --- holds --------------------------------------------------------------------------------

PLACE_HOLD = """
INSERT INTO holds (hold_id, scope, subject_id, account_id, categories, reason, placed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (hold_id) DO NOTHING
"""
RELEASE_HOLD = """
INSERT INTO holds (hold_id, scope, subject_id, account_id, released_at) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (hold_id) DO UPDATE SET released_at = COALESCE(holds.released_at, $5)
"""
HOLDS_FOR_SUBJECTS = """
SELECT DISTINCT h.hold_id, h.scope, h.subject_id, h.account_id, h.categories, h.reason
FROM unnest($1::text[]) AS x(subject_id)
LEFT JOIN subjects s ON s.subject_id = x.subject_id
JOIN holds h ON h.released_at IS NULL AND h.placed_at IS NOT NULL
  AND ((h.scope = 'subject' AND h.subject_id = x.subject_id)
       OR (h.scope = 'account' AND h.account_id = s.account_id))
"""
ANY_ACTIVE_HOLD = """
SELECT EXISTS (SELECT 1 FROM holds WHERE released_at IS NULL AND placed_at IS NOT NULL)
"""
ACTIVE_HOLDS = """
SELECT hold_id, scope, subject_id, account_id, categories, reason, placed_at, released_at
FROM holds WHERE placed_at IS NOT NULL ORDER BY placed_at, hold_id
"""


async def place_hold(conn: Conn, hold: Hold, at: datetime) -> bool:
    """Record a hold; False when it was known (placed or already released)."""
    result: str = await conn.execute(
        PLACE_HOLD,
        hold.hold_id,
        hold.scope,
        hold.subject_id,
        hold.account_id,
        list(hold.categories) if hold.categories is not None else None,
        hold.reason,
        at,
    )
    return result.endswith(" 1")


async def release_hold(
    conn: Conn,
    hold_id: str,
    scope: str,
    subject_id: str | None,
    account_id: str | None,
    at: datetime,
) -> None:
    await conn.execute(RELEASE_HOLD, hold_id, scope, subject_id, account_id, at)


def _hold(row: asyncpg.Record) -> Hold:
    return Hold(
        hold_id=row["hold_id"],
        scope=row["scope"],
        subject_id=row["subject_id"],
        account_id=row["account_id"],
        categories=tuple(row["categories"]) if row["categories"] is not None else None,
        reason=row["reason"] or "",
    )


async def holds_for(conn: Conn, subject_ids: Sequence[str]) -> list[Hold]:
    """Active holds covering any of the subjects, directly or through their accounts."""
    if not await conn.fetchval(ANY_ACTIVE_HOLD):  # the usual case, and cheap to ask
        return []
    return [_hold(r) for r in await conn.fetch(HOLDS_FOR_SUBJECTS, list(set(subject_ids)))]


async def all_holds(conn: Conn) -> list[asyncpg.Record]:
    return list(await conn.fetch(ACTIVE_HOLDS))


def hold_from_row(row: asyncpg.Record) -> Hold:
    return _hold(row)


# --- jobs ---------------------------------------------------------------------------------

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
RETRY_JOB = "UPDATE jobs SET last_error = $2, next_action_at = $3 WHERE job_id = $1"
CLAIM_REISSUE = """
SELECT * FROM jobs WHERE status = 'issued' AND next_action_at <= $1
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


async def fail_job(conn: Conn, job_id: str, error: str) -> None:
    await conn.execute(FAIL_JOB, job_id, error)


async def retry_job(conn: Conn, job_id: str, error: str, at: datetime) -> None:
    await conn.execute(RETRY_JOB, job_id, error, at)


async def claim_reissue(conn: Conn, now: datetime, limit: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(CLAIM_REISSUE, now, limit))


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
) -> list[asyncpg.Record]:
    return list(await conn.fetch(LIST_JOBS, overdue, status, subject_id, request_id, limit))


async def open_request_jobs(conn: Conn, request_id: str) -> int:
    value: int = await conn.fetchval(OPEN_REQUEST_JOBS, request_id)
    return value


# --- requests -----------------------------------------------------------------------------

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
ORDER BY deadline LIMIT $2
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


async def open_requests_due_before(conn: Conn, until: datetime, limit: int) -> list[asyncpg.Record]:
    """Open requests whose deadline falls before `until` (overdue ones included), soonest first."""
    return list(await conn.fetch(OPEN_REQUESTS_DUE_BEFORE, until, limit))


async def requests_due_soon(conn: Conn, now: datetime, until: datetime) -> dict[str, int]:
    return {r["kind"]: r["n"] for r in await conn.fetch(DUE_SOON, now, until)}


async def subject_requests(conn: Conn, subject_id: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(SUBJECT_REQUESTS, subject_id))


# --- consent ------------------------------------------------------------------------------

CONSENT_SEEN = "SELECT version, withdrawn FROM consent_seen WHERE subject_id = $1 FOR UPDATE"
PUT_CONSENT = """
INSERT INTO consent_seen (subject_id, version, withdrawn) VALUES ($1, $2, $3::jsonb)
ON CONFLICT (subject_id) DO UPDATE SET version = $2, withdrawn = $3::jsonb
"""


async def consent_seen(conn: Conn, subject_id: str) -> tuple[int, dict[str, bool]] | None:
    row = await conn.fetchrow(CONSENT_SEEN, subject_id)
    return None if row is None else (row["version"], orjson.loads(row["withdrawn"]))


async def put_consent(conn: Conn, subject_id: str, version: int, gone: dict[str, bool]) -> None:
    """The subject's latest consent version and which purposes were withdrawn in it."""
    await conn.execute(PUT_CONSENT, subject_id, version, orjson.dumps(gone).decode())


# --- certificates -------------------------------------------------------------------------

CHAIN_LOCK = "SELECT pg_advisory_xact_lock(hashtext('retention-certificates'))"
LAST_HASH = "SELECT hash FROM certificates ORDER BY seq DESC LIMIT 1"
APPEND_CERTIFICATE = """
INSERT INTO certificates (job_id, body, prev_hash, hash) VALUES ($1, $2::jsonb, $3, $4)
"""
CHAIN = "SELECT job_id, body, prev_hash, hash FROM certificates ORDER BY seq"
SUBJECT_CERTIFICATES = """
SELECT c.seq, c.body, c.hash FROM certificates c JOIN jobs j ON j.job_id = c.job_id
WHERE j.subject_id = $1 ORDER BY c.seq
"""
UNCERTIFIED = """
SELECT j.job_id FROM jobs j LEFT JOIN certificates c ON c.job_id = j.job_id
WHERE j.kind = 'deletion' AND j.status = 'completed' AND c.job_id IS NULL
"""


async def append_certificate(conn: Conn, cert: Certificate) -> str:
    """Append `cert` to the chain under a lock (one writer at a time); returns its hash."""
    await conn.execute(CHAIN_LOCK)
    prev: str | None = await conn.fetchval(LAST_HASH)
    prev_hash = prev or GENESIS
    digest = certificate_hash(prev_hash, cert)
    await conn.execute(
        APPEND_CERTIFICATE,
        cert.job_id,
        orjson.dumps(cert.model_dump(mode="json")).decode(),
        prev_hash,
        digest,
    )
    return digest


async def chain(conn: Conn) -> list[tuple[Certificate, str, str]]:
    return [
        (Certificate.model_validate_json(r["body"]), r["prev_hash"], r["hash"])
        for r in await conn.fetch(CHAIN)
    ]


async def subject_certificates(conn: Conn, subject_id: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(SUBJECT_CERTIFICATES, subject_id))


async def uncertified_jobs(conn: Conn) -> list[str]:
    return [r["job_id"] for r in await conn.fetch(UNCERTIFIED)]
