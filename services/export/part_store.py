"""The parts a request received, its per-category failures and the exchange files awaiting
deletion (asyncpg; every function takes the caller's connection).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from services.export.domain import Failure, PartSummary
from shared.contract.events import ExportPartData
from shared.plumbing.db import Conn

SELECT_PART = """
SELECT status FROM parts
WHERE request_id = $1 AND owner = $2 AND category = $3 AND part_index = $4
"""
SELECT_PART_COUNT = """
SELECT part_count FROM parts WHERE request_id = $1 AND owner = $2 AND category = $3 LIMIT 1
"""
UPSERT_PART = """
INSERT INTO parts (request_id, owner, category, part_index, part_count, status, record_count,
                   sha256, record_schema, error, received_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (request_id, owner, category, part_index) DO UPDATE
SET status = EXCLUDED.status, record_count = EXCLUDED.record_count, sha256 = EXCLUDED.sha256,
    record_schema = EXCLUDED.record_schema, error = EXCLUDED.error,
    received_at = EXCLUDED.received_at
WHERE parts.status = 'failed'
"""
SUMMARY = """
SELECT owner, category, max(part_count) AS part_count,
       count(*) FILTER (WHERE status = 'stored') AS stored,
       coalesce(sum(record_count) FILTER (WHERE status = 'stored'), 0) AS records,
       coalesce(array_agg('part ' || part_index || ': ' || error ORDER BY part_index)
                FILTER (WHERE status = 'failed'), '{}') AS failed
FROM parts WHERE request_id = $1 GROUP BY owner, category
"""
STORED_PARTS = """
SELECT owner, category, part_index, record_count, sha256, record_schema FROM parts
WHERE request_id = $1 AND status = 'stored' ORDER BY owner, category, part_index
"""
UPSERT_FAILURE = """
INSERT INTO failures (request_id, owner, category, error, retryable, failed_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (request_id, owner, category) DO UPDATE
SET error = EXCLUDED.error, retryable = EXCLUDED.retryable, failed_at = EXCLUDED.failed_at
"""
SELECT_FAILURES = """
SELECT owner, category, error, retryable, false AS erased FROM failures WHERE request_id = $1
UNION ALL
SELECT owner, category, reason, false, true FROM erased_categories WHERE request_id = $1
"""
INSERT_ERASED = """
INSERT INTO erased_categories (request_id, owner, category, reason, erased_at)
SELECT $1, $2, category, $4, $5 FROM unnest($3::text[]) AS category
ON CONFLICT DO NOTHING
"""
DELETE_ERASED_PARTS = """
DELETE FROM parts WHERE request_id = $1 AND owner = $2 AND category = ANY($3::text[])
"""
SELECT_ERASED = """
SELECT category FROM erased_categories WHERE request_id = $1 AND owner = $2
"""
QUEUE_EXCHANGE_DELETION = """
INSERT INTO exchange_deletions (path, queued_at) VALUES ($1, $2) ON CONFLICT DO NOTHING
"""
CLAIM_EXCHANGE_DELETIONS = """
SELECT path FROM exchange_deletions WHERE path <> ALL($2::text[])
ORDER BY queued_at LIMIT $1 FOR UPDATE SKIP LOCKED
"""
DELETE_EXCHANGE_DELETIONS = "DELETE FROM exchange_deletions WHERE path = ANY($1::text[])"


@dataclass(frozen=True)
class ReceivedPart:
    """A part as received: stored (its records kept) or failed (with the reason)."""

    owner: str
    category: str
    part_index: int
    part_count: int
    sha256: str
    record_schema: str | None
    received_at: datetime
    status: str = "stored"
    record_count: int = 0
    error: str | None = None

    @classmethod
    def of(cls, data: ExportPartData, now: datetime) -> ReceivedPart:
        """The part an event announces, received at `now`."""
        return cls(
            owner=data.owner,
            category=data.category,
            part_index=data.part_index,
            part_count=data.part_count,
            sha256=data.sha256,
            record_schema=data.record_schema,
            received_at=now,
        )

    def stored(self, record_count: int) -> ReceivedPart:
        """This part, stored with its record count."""
        return replace(self, status="stored", record_count=record_count)

    def failed(self, reason: str) -> ReceivedPart:
        """This part, failed for `reason`."""
        return replace(self, status="failed", error=reason)


@dataclass(frozen=True)
class StoredPart:
    """A stored part as the bundle reads it."""

    owner: str
    category: str
    part_index: int
    record_count: int
    sha256: str
    record_schema: str | None


async def part_status(
    conn: Conn, request_id: str, owner: str, category: str, part_index: int
) -> str | None:
    """'stored', 'failed' or None."""
    status: str | None = await conn.fetchval(SELECT_PART, request_id, owner, category, part_index)
    return status


async def known_part_count(conn: Conn, request_id: str, owner: str, category: str) -> int | None:
    """The part_count earlier parts of this category gave."""
    count: int | None = await conn.fetchval(SELECT_PART_COUNT, request_id, owner, category)
    return count


async def save_part(conn: Conn, request_id: str, part: ReceivedPart) -> None:
    """Record a received part (a stored one replaces an earlier failed one)."""
    await conn.execute(
        UPSERT_PART,
        request_id,
        part.owner,
        part.category,
        part.part_index,
        part.part_count,
        part.status,
        part.record_count,
        part.sha256,
        part.record_schema,
        part.error,
        part.received_at,
    )


async def summary(conn: Conn, request_id: str) -> list[PartSummary]:
    """Per owner and category: parts expected, stored, records, failures."""
    return [
        PartSummary(
            owner=r["owner"],
            category=r["category"],
            part_count=r["part_count"],
            stored=r["stored"],
            records=r["records"],
            failed=list(r["failed"]),
        )
        for r in await conn.fetch(SUMMARY, request_id)
    ]


async def stored_parts(conn: Conn, request_id: str) -> list[StoredPart]:
    """Every stored part, in bundle order."""
    return [StoredPart(**dict(r)) for r in await conn.fetch(STORED_PARTS, request_id)]


async def save_failure(conn: Conn, request_id: str, failure: Failure, now: datetime) -> None:
    """Record an owner's failure for a category (the latest replaces an earlier one)."""
    await conn.execute(
        UPSERT_FAILURE,
        request_id,
        failure.owner,
        failure.category or "",
        failure.error,
        failure.retryable,
        now,
    )


async def failures(conn: Conn, request_id: str) -> list[Failure]:
    """Every failure recorded for a request."""
    return [
        Failure(
            owner=r["owner"],
            category=r["category"] or None,
            error=r["error"],
            retryable=r["retryable"],
            erased=r["erased"],
        )
        for r in await conn.fetch(SELECT_FAILURES, request_id)
    ]


async def mark_erased(
    conn: Conn,
    request_id: str,
    owner: str,
    categories: Sequence[str],
    reason: str,
    now: datetime,
) -> None:
    """Settle an owner's categories as erased and forget the parts already received of them
    (the caller deletes their files)."""
    await conn.execute(INSERT_ERASED, request_id, owner, list(categories), reason, now)
    await conn.execute(DELETE_ERASED_PARTS, request_id, owner, list(categories))


async def erased_categories(conn: Conn, request_id: str, owner: str) -> set[str]:
    """The categories of `owner` an erasure took out of the request."""
    return {r["category"] for r in await conn.fetch(SELECT_ERASED, request_id, owner)}


async def queue_exchange_deletion(conn: Conn, path: str, now: datetime) -> None:
    """Delete an exchange file once this transaction has committed (the cleaner does it)."""
    await conn.execute(QUEUE_EXCHANGE_DELETION, path, now)


async def claim_exchange_deletions(
    conn: Conn, limit: int = 100, exclude: Sequence[str] = ()
) -> list[str]:
    """Exchange files whose intake committed (but `exclude`), locked for this transaction."""
    rows = await conn.fetch(CLAIM_EXCHANGE_DELETIONS, limit, list(exclude))
    return [r["path"] for r in rows]


async def forget_exchange_deletions(conn: Conn, paths: Sequence[str]) -> None:
    """Drop the queue entries of exchange files now deleted."""
    await conn.execute(DELETE_EXCHANGE_DELETIONS, list(paths))
