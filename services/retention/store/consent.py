"""The consent version last seen per subject and which purposes it withdrew."""

from __future__ import annotations

import orjson

from shared.plumbing.db import Conn

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
