"""The export service's tables (asyncpg; every method takes the caller's connection)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg
import orjson

from services.export.domain import Failure, PartSummary, Request, State
from shared.contract.events import CategoryOutcome, ExportPartData
from shared.plumbing.db import Conn

INSERT_REQUEST = """
INSERT INTO requests (request_id, storage_key, subject, requested_at, deadline, status,
                      public_key, sealed_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
SELECT_REQUEST = "SELECT * FROM requests WHERE request_id = $1"
LOCK_REQUEST = "SELECT * FROM requests WHERE request_id = $1 FOR UPDATE"
SELECT_BY_BUNDLE = "SELECT * FROM requests WHERE bundle_id = $1"
SET_STATE = "UPDATE requests SET status = $2, updated_at = now() WHERE request_id = $1"
SET_DEADLINE = """
UPDATE requests SET deadline = $2, extended = true, updated_at = now() WHERE request_id = $1
"""
CANCEL = """
UPDATE requests SET status = 'cancelled', sealed_key = NULL, finished_at = $2,
       assembling_until = NULL, updated_at = now()
WHERE request_id = $1
"""
INSERT_JOB = "INSERT INTO jobs (request_id, owner, job_id, categories) VALUES ($1, $2, $3, $4)"
SELECT_JOBS = "SELECT owner, job_id, categories FROM jobs WHERE request_id = $1"
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
SELECT_FAILURES = "SELECT owner, category, error, retryable FROM failures WHERE request_id = $1"
CLAIM_DUE = """
SELECT * FROM requests
WHERE status = 'ready'
   OR (status IN ('pending', 'in_progress') AND deadline <= $1)
   OR (status = 'assembling' AND assembling_until <= $1)
ORDER BY deadline LIMIT 1
FOR UPDATE SKIP LOCKED
"""
START_ASSEMBLY = """
UPDATE requests SET status = 'assembling', assembling_until = $2, updated_at = now()
WHERE request_id = $1
"""
FINISH = """
UPDATE requests
SET status = $2, sealed_key = NULL, missing_owners = $3, outcomes = $4::jsonb, bundle_id = $5,
    bundle_expires_at = $6, finished_at = $7, assembling_until = NULL, updated_at = now()
WHERE request_id = $1
"""
CLAIM_EXPIRED_BUNDLES = """
SELECT request_id, bundle_id FROM requests
WHERE bundle_id IS NOT NULL AND bundle_deleted_at IS NULL AND bundle_expires_at <= $1
ORDER BY bundle_expires_at LIMIT $2
FOR UPDATE SKIP LOCKED
"""
REQUEST_COUNTS = """
SELECT CASE WHEN status IN ('ready', 'assembling') THEN 'in_progress' ELSE status END AS status,
       status IN ('pending', 'in_progress', 'ready', 'assembling') AND deadline < $1 AS overdue,
       count(*) AS n
FROM requests GROUP BY 1, 2
"""
DUE_SOON = """
SELECT count(*) FROM requests
WHERE status IN ('pending', 'in_progress', 'ready', 'assembling')
  AND deadline >= $1 AND deadline < $2
"""
LOCK_SUBJECT_REQUESTS = """
SELECT * FROM requests WHERE subject = $1 ORDER BY request_id FOR UPDATE
"""
QUEUE_EXCHANGE_DELETION = """
INSERT INTO exchange_deletions (path, queued_at) VALUES ($1, $2) ON CONFLICT DO NOTHING
"""
CLAIM_EXCHANGE_DELETIONS = """
SELECT path FROM exchange_deletions ORDER BY queued_at LIMIT $1 FOR UPDATE SKIP LOCKED
"""
DELETE_EXCHANGE_DELETIONS = "DELETE FROM exchange_deletions WHERE path = ANY($1::text[])"
MARK_BUNDLE_DELETED = """
UPDATE requests SET bundle_deleted_at = $2, updated_at = now() WHERE request_id = ANY($1::text[])
"""


@dataclass(frozen=True)
class RequestRow:
    """A request row: the domain view plus what only the service needs."""

    request: Request
    storage_key: str
    public_key: str
    sealed_key: bytes | None
    bundle_deleted_at: datetime | None


@dataclass(frozen=True)
class Job:
    job_id: str
    categories: list[str]


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
        return replace(self, status="stored", record_count=record_count)

    def failed(self, reason: str) -> ReceivedPart:
        return replace(self, status="failed", error=reason)


@dataclass(frozen=True)
class StoredPart:
    owner: str
    category: str
    part_index: int
    record_count: int
    sha256: str
    record_schema: str | None


def _row(record: asyncpg.Record | None) -> RequestRow | None:
    if record is None:
        return None
    outcomes = [CategoryOutcome.model_validate(o) for o in orjson.loads(record["outcomes"])]
    request = Request(
        request_id=record["request_id"],
        subject=record["subject"],
        requested_at=record["requested_at"],
        deadline=record["deadline"],
        extended=record["extended"],
        state=State(record["status"]),
        missing_owners=list(record["missing_owners"]),
        outcomes=outcomes,
        bundle_id=record["bundle_id"],
        bundle_expires_at=record["bundle_expires_at"],
    )
    sealed = record["sealed_key"]
    return RequestRow(
        request=request,
        storage_key=record["storage_key"],
        public_key=record["public_key"],
        sealed_key=bytes(sealed) if sealed is not None else None,
        bundle_deleted_at=record["bundle_deleted_at"],
    )


async def get_request(conn: Conn, request_id: str, *, lock: bool = False) -> RequestRow | None:
    """One request (locked for this transaction when `lock`)."""
    return _row(await conn.fetchrow(LOCK_REQUEST if lock else SELECT_REQUEST, request_id))


async def get_by_bundle(conn: Conn, bundle_id: str) -> RequestRow | None:
    """The request a bundle belongs to."""
    return _row(await conn.fetchrow(SELECT_BY_BUNDLE, bundle_id))


async def insert_request(
    conn: Conn,
    request: Request,
    *,
    storage_key: str,
    public_key: str,
    sealed_key: bytes,
    jobs: Mapping[str, Job],
) -> None:
    """A new request with its jobs."""
    await conn.execute(
        INSERT_REQUEST,
        request.request_id,
        storage_key,
        request.subject,
        request.requested_at,
        request.deadline,
        request.state.value,
        public_key,
        sealed_key,
    )
    await conn.executemany(
        INSERT_JOB,
        [(request.request_id, o, job.job_id, job.categories) for o, job in sorted(jobs.items())],
    )


async def set_state(conn: Conn, request_id: str, state: State) -> None:
    await conn.execute(SET_STATE, request_id, state.value)


async def set_deadline(conn: Conn, request_id: str, deadline: datetime) -> None:
    await conn.execute(SET_DEADLINE, request_id, deadline)


async def cancel(conn: Conn, request_id: str, now: datetime) -> None:
    """Mark cancelled and destroy the private key."""
    await conn.execute(CANCEL, request_id, now)


async def jobs(conn: Conn, request_id: str) -> dict[str, Job]:
    """The jobs issued for a request, by owner."""
    rows = await conn.fetch(SELECT_JOBS, request_id)
    return {r["owner"]: Job(r["job_id"], list(r["categories"])) for r in rows}


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
    return [
        Failure(
            owner=r["owner"],
            category=r["category"] or None,
            error=r["error"],
            retryable=r["retryable"],
        )
        for r in await conn.fetch(SELECT_FAILURES, request_id)
    ]


async def claim_due(conn: Conn, now: datetime, lease_until: datetime) -> RequestRow | None:
    """Claim one request to assemble (all parts in, past its deadline, or a lapsed lease)."""
    row = _row(await conn.fetchrow(CLAIM_DUE, now))
    if row is not None:
        await conn.execute(START_ASSEMBLY, row.request.request_id, lease_until)
    return row


async def finish(
    conn: Conn,
    request_id: str,
    *,
    state: State,
    missing_owners: Sequence[str],
    outcomes: Sequence[CategoryOutcome],
    bundle_id: str,
    bundle_expires_at: datetime,
    now: datetime,
) -> None:
    """Close the request with its bundle and destroy its private key."""
    await conn.execute(
        FINISH,
        request_id,
        state.value,
        list(missing_owners),
        orjson.dumps([o.model_dump(mode="json", exclude_none=True) for o in outcomes]).decode(),
        bundle_id,
        bundle_expires_at,
        now,
    )


async def claim_expired_bundles(
    conn: Conn, now: datetime, limit: int = 100
) -> list[tuple[str, str]]:
    """(request_id, bundle_id) of bundles past their expiry, locked for this transaction."""
    rows = await conn.fetch(CLAIM_EXPIRED_BUNDLES, now, limit)
    return [(r["request_id"], r["bundle_id"]) for r in rows]


async def mark_bundles_deleted(conn: Conn, request_ids: Sequence[str], now: datetime) -> None:
    await conn.execute(MARK_BUNDLE_DELETED, list(request_ids), now)


async def subject_requests(conn: Conn, subject: str) -> list[RequestRow]:
    """Every export request of a subject, locked for this transaction."""
    rows = await conn.fetch(LOCK_SUBJECT_REQUESTS, subject)
    return [row for row in (_row(r) for r in rows) if row is not None]


async def queue_exchange_deletion(conn: Conn, path: str, now: datetime) -> None:
    """Delete an exchange file once this transaction has committed (the cleaner does it)."""
    await conn.execute(QUEUE_EXCHANGE_DELETION, path, now)


async def claim_exchange_deletions(conn: Conn, limit: int = 100) -> list[str]:
    """Exchange files whose intake committed, locked for this transaction."""
    return [r["path"] for r in await conn.fetch(CLAIM_EXCHANGE_DELETIONS, limit)]


async def forget_exchange_deletions(conn: Conn, paths: Sequence[str]) -> None:
    await conn.execute(DELETE_EXCHANGE_DELETIONS, list(paths))


async def request_counts(conn: Conn, now: datetime) -> dict[tuple[str, bool], int]:
    """Requests by OpenDSR status word and overdue flag (for the deadline alerts)."""
    return {(r["status"], r["overdue"]): r["n"] for r in await conn.fetch(REQUEST_COUNTS, now)}


async def due_soon(conn: Conn, now: datetime, until: datetime) -> int:
    """Open requests whose deadline falls between `now` and `until`."""
    count: int = await conn.fetchval(DUE_SOON, now, until)
    return count
