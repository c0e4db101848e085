"""Restrictions of processing (Art. 18) per subject, target and category: placed and lifted."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from shared.plumbing.db import Conn

PUT = """
INSERT INTO restrictions (subject_id, target, category, owner, grounds, event_id, hold_id,
                          placed_at)
SELECT $1, x.target, x.category, x.owner, $2, $3, x.hold_id, $4
FROM unnest($5::text[], $6::text[], $7::text[], $8::text[]) AS x(target, category, owner, hold_id)
ON CONFLICT (subject_id, target, category) DO UPDATE
SET owner = EXCLUDED.owner, grounds = EXCLUDED.grounds, event_id = EXCLUDED.event_id,
    hold_id = EXCLUDED.hold_id, placed_at = EXCLUDED.placed_at, lifted_at = NULL
WHERE restrictions.placed_at <= EXCLUDED.placed_at
  AND (restrictions.lifted_at IS NULL OR restrictions.lifted_at <= EXCLUDED.placed_at)
RETURNING category, hold_id
"""
LIFT = """
UPDATE restrictions SET lifted_at = $3
WHERE subject_id = $1 AND target = ANY($2::text[]) AND lifted_at IS NULL AND placed_at <= $3
RETURNING category, owner
"""
ACTIVE_CATEGORIES = """
SELECT DISTINCT category FROM restrictions WHERE subject_id = $1 AND lifted_at IS NULL
"""
STALE_HOLDS = """
SELECT hold_id FROM holds
WHERE subject_id = $1 AND scope = 'subject' AND released_at IS NULL AND placed_at IS NOT NULL
  AND starts_with(hold_id, $2) AND categories && $3::text[]
  AND hold_id NOT IN (SELECT hold_id FROM restrictions
                      WHERE subject_id = $1 AND lifted_at IS NULL AND hold_id IS NOT NULL)
"""


async def put(
    conn: Conn,
    subject_id: str,
    grounds: str | None,
    event_id: str,
    at: datetime,
    rows: Sequence[tuple[str, str, str, str | None]],
) -> list[tuple[str, str | None]]:
    """Record (target, category, owner, hold_id) rows restricted by one event (newer wins);
    the (category, hold_id) of those written (an older event arriving late writes none)."""
    written = await conn.fetch(
        PUT,
        subject_id,
        grounds,
        event_id,
        at,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
    )
    return [(r["category"], r["hold_id"]) for r in written]


async def lift(
    conn: Conn, subject_id: str, targets: Sequence[str], at: datetime
) -> list[tuple[str, str]]:
    """Mark the subject's restrictions of `targets` lifted; the (category, owner) they named."""
    rows = await conn.fetch(LIFT, subject_id, list(targets), at)
    return sorted({(r["category"], r["owner"]) for r in rows})


async def active_categories(conn: Conn, subject_id: str) -> set[str]:
    """Categories of the subject some restriction still covers."""
    return {r["category"] for r in await conn.fetch(ACTIVE_CATEGORIES, subject_id)}


async def stale_holds(
    conn: Conn, subject_id: str, prefix: str, categories: Sequence[str]
) -> list[str]:
    """Active restriction holds of these categories no active restriction names any more."""
    return [
        r["hold_id"] for r in await conn.fetch(STALE_HOLDS, subject_id, prefix, list(categories))
    ]
