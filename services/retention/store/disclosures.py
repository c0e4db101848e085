"""Disclosures to authorities, per subject (policy 3.2)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from shared.contract.events import DisclosureRecordedData
from shared.plumbing.db import Conn

RECORD = """
INSERT INTO disclosures (disclosure_id, subject_id, authority, authority_kind, legal_basis,
                         reference, categories, disclosed_at, disclosed_by, secret_until,
                         recorded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (disclosure_id) DO NOTHING
"""
SUBJECT_DISCLOSURES = """
SELECT disclosure_id, authority, authority_kind, legal_basis, reference, categories,
       disclosed_at, disclosed_by, secret_until
FROM disclosures WHERE subject_id = $1 ORDER BY disclosed_at, disclosure_id
"""


async def record(conn: Conn, subject_id: str, d: DisclosureRecordedData, at: datetime) -> bool:
    """Keep the disclosure (once: a replay changes nothing); False when it was known."""
    status: str = await conn.execute(
        RECORD,
        d.disclosure_id,
        subject_id,
        d.authority,
        d.authority_kind.value,
        d.legal_basis,
        d.reference,
        list(d.categories),
        d.disclosed_at,
        d.disclosed_by,
        d.secret_until,
        at,
    )
    return status.endswith(" 1")


async def subject_disclosures(conn: Conn, subject_id: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(SUBJECT_DISCLOSURES, subject_id))
