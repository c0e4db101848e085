"""Accounts (lifecycle, subscription terms) and the subjects that belong to them."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from shared.plumbing.db import Conn

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
