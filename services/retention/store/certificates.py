"""The hash-chained, append-only log of deletion certificates."""

from __future__ import annotations

import asyncpg
import orjson

from services.retention.domain.certificates import GENESIS, Certificate, certificate_hash
from shared.plumbing.db import Conn

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
