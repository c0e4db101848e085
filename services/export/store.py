"""The export requests' rows: each request, its jobs and its bundle (asyncpg; every function
takes the caller's connection). Parts and failures are in `part_store`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import orjson

from services.export.domain import Request, State
from shared.contract.events import CategoryOutcome
from shared.plumbing.db import Conn

INSERT_REQUEST = """
INSERT INTO requests (request_id, storage_key, subject, requested_at, deadline, status,
                      public_key, sealed_key, data_key, sealed_at_rest)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, true)
"""
SELECT_REQUEST = "SELECT * FROM requests WHERE request_id = $1"
LOCK_REQUEST = "SELECT * FROM requests WHERE request_id = $1 FOR UPDATE"
SELECT_BY_BUNDLE = "SELECT * FROM requests WHERE bundle_id = $1"
SET_STATE = "UPDATE requests SET status = $2, updated_at = now() WHERE request_id = $1"
SET_DEADLINE = """
UPDATE requests SET deadline = $2, extended = true, updated_at = now() WHERE request_id = $1
"""
CANCEL = """
UPDATE requests SET status = 'cancelled', sealed_key = NULL, data_key = NULL, finished_at = $2,
       assembling_until = NULL, updated_at = now()
WHERE request_id = $1
"""
INSERT_JOB = "INSERT INTO jobs (request_id, owner, job_id, categories) VALUES ($1, $2, $3, $4)"
SELECT_JOBS = "SELECT owner, job_id, categories FROM jobs WHERE request_id = $1"
CLAIM_DUE = """
SELECT * FROM requests
WHERE status = 'ready'
   OR (status IN ('pending', 'in_progress') AND deadline <= $1)
   OR (status = 'assembling' AND assembling_until <= $1)
ORDER BY deadline LIMIT 1
FOR UPDATE SKIP LOCKED
"""
START_ASSEMBLY = """
UPDATE requests SET status = 'assembling', assembling_until = $2,
       assembly_attempt = assembly_attempt + 1, updated_at = now()
WHERE request_id = $1
RETURNING assembly_attempt
"""
FINISH = """
UPDATE requests
SET status = $2, sealed_key = NULL, missing_owners = $3, outcomes = $4::jsonb, bundle_id = $5,
    bundle_expires_at = $6, finished_at = $7, assembling_until = NULL, updated_at = now()
WHERE request_id = $1 AND status = 'assembling' AND assembly_attempt = $8
"""
HOLDS_ATTEMPT = """
SELECT EXISTS (
    SELECT FROM requests
    WHERE request_id = $1 AND status = 'assembling' AND assembly_attempt = $2
)
"""
CLAIM_EXPIRED_BUNDLES = """
SELECT request_id, bundle_id FROM requests
WHERE bundle_id IS NOT NULL AND bundle_deleted_at IS NULL AND bundle_expires_at <= $1
  AND request_id <> ALL($3::text[])
ORDER BY bundle_expires_at LIMIT $2
FOR UPDATE SKIP LOCKED
"""
MARK_BUNDLE_DELETED = """
UPDATE requests SET bundle_deleted_at = $2, data_key = NULL, updated_at = now()
WHERE request_id = ANY($1::text[])
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


@dataclass(frozen=True)
class RequestRow:
    """A request row: the domain view plus what only the service needs."""

    request: Request
    storage_key: str
    public_key: str
    sealed_key: bytes | None
    bundle_deleted_at: datetime | None
    data_key: bytes | None = None
    """The files' data key, sealed under the service key; None once destroyed."""
    sealed_at_rest: bool = False
    """False only for a request from before files were encrypted (migration 0006)."""


@dataclass(frozen=True)
class Job:
    """The job issued to one owner: its id and the categories it asks for."""

    job_id: str
    categories: list[str]


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
    sealed, data_key = record["sealed_key"], record["data_key"]
    return RequestRow(
        request=request,
        storage_key=record["storage_key"],
        public_key=record["public_key"],
        sealed_key=bytes(sealed) if sealed is not None else None,
        bundle_deleted_at=record["bundle_deleted_at"],
        data_key=bytes(data_key) if data_key is not None else None,
        sealed_at_rest=record["sealed_at_rest"],
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
    data_key: bytes,
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
        data_key,
    )
    await conn.executemany(
        INSERT_JOB,
        [(request.request_id, o, job.job_id, job.categories) for o, job in sorted(jobs.items())],
    )


async def set_state(conn: Conn, request_id: str, state: State) -> None:
    """Move the request to `state`."""
    await conn.execute(SET_STATE, request_id, state.value)


async def set_deadline(conn: Conn, request_id: str, deadline: datetime) -> None:
    """Extend the deadline (marks the request extended)."""
    await conn.execute(SET_DEADLINE, request_id, deadline)


async def cancel(conn: Conn, request_id: str, now: datetime) -> None:
    """Mark cancelled and destroy the private key and the files' data key."""
    await conn.execute(CANCEL, request_id, now)


async def jobs(conn: Conn, request_id: str) -> dict[str, Job]:
    """The jobs issued for a request, by owner."""
    rows = await conn.fetch(SELECT_JOBS, request_id)
    return {r["owner"]: Job(r["job_id"], list(r["categories"])) for r in rows}


@dataclass(frozen=True)
class Claim:
    """A request claimed for assembly and the attempt number that claim holds."""

    row: RequestRow
    attempt: int


async def claim_due(conn: Conn, now: datetime, lease_until: datetime) -> Claim | None:
    """Claim one request to assemble (all parts in, past its deadline, or a lapsed lease); the
    claim takes the next attempt number, which fences out the attempt whose lease lapsed."""
    row = _row(await conn.fetchrow(CLAIM_DUE, now))
    if row is None:
        return None
    attempt: int = await conn.fetchval(START_ASSEMBLY, row.request.request_id, lease_until)
    return Claim(row, attempt)


async def finish(
    conn: Conn,
    request_id: str,
    *,
    attempt: int,
    state: State,
    missing_owners: Sequence[str],
    outcomes: Sequence[CategoryOutcome],
    bundle_id: str,
    bundle_expires_at: datetime,
    now: datetime,
) -> bool:
    """Close the request with its bundle and destroy its private key, only if `attempt` still
    holds the claim; False when it does not (cancelled, or claimed again after its lease)."""
    status = await conn.execute(
        FINISH,
        request_id,
        state.value,
        list(missing_owners),
        orjson.dumps([o.model_dump(mode="json", exclude_none=True) for o in outcomes]).decode(),
        bundle_id,
        bundle_expires_at,
        now,
        attempt,
    )
    return bool(status == "UPDATE 1")


async def holds_attempt(conn: Conn, request_id: str, attempt: int) -> bool:
    """Whether assembly `attempt` still holds the request (no later attempt, no cancellation)."""
    return bool(await conn.fetchval(HOLDS_ATTEMPT, request_id, attempt))


async def claim_expired_bundles(
    conn: Conn, now: datetime, limit: int = 100, exclude: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """(request_id, bundle_id) of bundles past their expiry (but those of `exclude`'s
    requests), locked for this transaction."""
    rows = await conn.fetch(CLAIM_EXPIRED_BUNDLES, now, limit, list(exclude))
    return [(r["request_id"], r["bundle_id"]) for r in rows]


async def mark_bundles_deleted(conn: Conn, request_ids: Sequence[str], now: datetime) -> None:
    """Note that these requests' bundles are gone."""
    await conn.execute(MARK_BUNDLE_DELETED, list(request_ids), now)


async def subject_requests(conn: Conn, subject: str) -> list[RequestRow]:
    """Every export request of a subject, locked for this transaction."""
    rows = await conn.fetch(LOCK_SUBJECT_REQUESTS, subject)
    return [row for row in (_row(r) for r in rows) if row is not None]


async def request_counts(conn: Conn, now: datetime) -> dict[tuple[str, bool], int]:
    """Requests by OpenDSR status word and overdue flag (for the deadline alerts)."""
    return {(r["status"], r["overdue"]): r["n"] for r in await conn.fetch(REQUEST_COUNTS, now)}


async def due_soon(conn: Conn, now: datetime, until: datetime) -> int:
    """Open requests whose deadline falls between `now` and `until`."""
    count: int = await conn.fetchval(DUE_SOON, now, until)
    return count
