"""The rules last applied, and the pending timers a change of rules moves."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from shared.plumbing.db import Conn

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
