"""Legal holds: placed, released, and the active ones covering given subjects."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.retention.domain.model import Hold
from shared.plumbing.db import Conn

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
HOLDS_PAGE = """
SELECT hold_id, scope, subject_id, account_id, categories, reason, placed_at, released_at
FROM holds WHERE placed_at IS NOT NULL AND ($1 OR released_at IS NULL)
  AND ($2::timestamptz IS NULL OR (placed_at, hold_id) > ($2, $3::text))
ORDER BY placed_at, hold_id LIMIT $4
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


async def holds_page(
    conn: Conn, include_released: bool, limit: int, after: tuple[datetime, str] | None = None
) -> list[asyncpg.Record]:
    """Placed holds (active ones only unless `include_released`) by (placed_at, hold_id)."""
    since, hold_id = after if after is not None else (None, None)
    return list(await conn.fetch(HOLDS_PAGE, include_released, since, hold_id, limit))
