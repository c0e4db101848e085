"""A checkpoint never skips an entry that commits after it started with a lower number: it
waits for the ledger writers in flight (the append lock) and then signs their entries too."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from services.consent import ledger, store
from services.consent.checkpoints import LEDGER
from services.consent.ledger import Facts, Head
from services.consent.state import Change
from shared.evidence.loop import checkpoint_now
from tests.db.evidence.test_ledger_tamper import T0, open_consent
from tests.support.infra import Infra

pytestmark = pytest.mark.db

WAITING_FOR_LOCK = """
WITH k AS (SELECT hashtextextended('ledger-append:' || $1, 0) AS key)
SELECT count(*) FROM pg_locks, k
WHERE locktype = 'advisory' AND NOT granted AND mode = 'ExclusiveLock'
  AND classid = ((key >> 32) & 4294967295)::oid AND objid = (key & 4294967295)::oid
"""
"""The checkpointer waiting for this schema's ledger append lock (other tests' locks aside)."""


async def test_a_checkpoint_waits_for_the_writer_in_flight_and_covers_its_entry(
    infra: Infra, schema: str, key_file: Path
) -> None:
    async with open_consent(infra.database_url, schema, key_file) as consent:
        facts = Facts("evt_1", "web", "consent.granted.v1", T0)
        change = Change("consent", "marketing_email", "unset", "granted", True)
        entries, _ = ledger.chain(Head(), "p1", "usr_1", b"salt", [(facts, change)], T0)
        writer = await asyncpg.connect(infra.database_url)
        observer = await asyncpg.connect(infra.database_url)
        try:
            await writer.execute(f'SET search_path TO "{schema}"')
            tx = writer.transaction()
            await tx.start()
            await store.append_ledger(writer, entries)  # numbered, not yet committed
            checkpoint = asyncio.create_task(checkpoint_now(consent.ctx, LEDGER))
            while not await observer.fetchval(WAITING_FOR_LOCK, schema):
                assert not checkpoint.done(), "the checkpoint did not wait for the writer"
                await asyncio.sleep(0.01)
            await tx.commit()
            made = await checkpoint
        finally:
            await writer.close()
            await observer.close()
    assert made is not None
    assert (made.checkpoint.count, made.checkpoint.upto_seq) == (1, 1)
