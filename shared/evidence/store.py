"""Making a checkpoint of a service's audit log: SQL and the one transaction (shared).

Writers of a log hold a lock (shared, or for certificates the chain lock) from before their
entries get their sequence numbers until they commit. Taking that lock exclusively for one
statement therefore yields a sequence number below which every entry is committed: a
checkpoint up to it can never miss an entry that commits later with a lower number.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import orjson

from shared.contract.codec import new_event
from shared.contract.events import AuditCheckpoint, AuditCheckpointData
from shared.evidence.checkpoint import Checkpoint, Fork, Leaf, Previous, make_checkpoint
from shared.evidence.signing import Signer
from shared.plumbing import outbox
from shared.plumbing.db import Conn

LOCK_CHECKPOINTS = "SELECT pg_advisory_xact_lock(hashtextextended('checkpoints:' || $1, 0))"
LAST_CHECKPOINT = """
SELECT number, hash, upto_seq, restore_id FROM checkpoints WHERE log = $1 ORDER BY id DESC LIMIT 1
"""
LAST_RESTORE = "SELECT id, restored_at, backup_taken_at FROM restores ORDER BY id DESC LIMIT 1"
INSERT_CHECKPOINT = """
INSERT INTO checkpoints (log, number, hash, upto_seq, restore_id, body, created_at)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)
"""
PUBLISHED = "SELECT body FROM checkpoints WHERE log = $1 ORDER BY id"


@dataclass(frozen=True)
class LogSource:
    """A service's audit log as the checkpointer reads it."""

    log: str
    """Its name in checkpoints (`consent.ledger`, `retention.certificates`)."""
    lock: str
    """SQL: take the writers' lock exclusively (a statement of its own: the next one's snapshot
    must be taken after the lock is held)."""
    high: str
    """SQL: the highest sequence number (NULL for none)."""
    leaves: str
    """SQL: `seq, hash` of entries with $1 < seq <= $2, in order, at most $3."""
    oldest_uncovered: str
    """SQL: the record time of the first entry after the last checkpoint of log $1 (NULL for
    none); one statement on two indexes (the last checkpoint by id, then the entry by seq)."""


@dataclass(frozen=True)
class Made:
    """A checkpoint made, and whether more entries are waiting for the next one."""

    checkpoint: Checkpoint
    more: bool


async def make(
    conn: Conn,
    source: LogSource,
    signer: Signer,
    now: datetime,
    *,
    topic: str,
    schema: str,
    service: str,
    max_entries: int,
) -> Made | None:
    """Checkpoint what was added since the last checkpoint (and any restore since); None if
    there was nothing to sign. Publishes it through the outbox in the same transaction."""
    async with conn.transaction():
        await conn.execute(source.lock)
        upto: int = await conn.fetchval(source.high) or 0
    async with conn.transaction():
        await conn.execute(LOCK_CHECKPOINTS, f"{schema}:{source.log}")
        last = await conn.fetchrow(LAST_CHECKPOINT, source.log)
        previous = Previous(last["number"], last["hash"], last["upto_seq"]) if last else Previous()
        restore = await conn.fetchrow(LAST_RESTORE)
        restore_id = restore["id"] if restore else 0
        fork = None
        if restore is not None and restore_id > (last["restore_id"] if last else 0):
            fork = Fork(restore["restored_at"].isoformat(), restore["backup_taken_at"].isoformat())
        rows = await conn.fetch(source.leaves, previous.upto_seq, upto, max_entries)
        if not rows and fork is None:
            return None
        leaves = [Leaf(r["seq"], r["hash"]) for r in rows]
        checkpoint = make_checkpoint(signer, source.log, previous, leaves, now, fork)
        record = checkpoint.record()
        await conn.execute(
            INSERT_CHECKPOINT,
            source.log,
            checkpoint.number,
            checkpoint.hash,
            checkpoint.upto_seq,
            restore_id,
            orjson.dumps(record).decode(),
            now,
        )
        event = new_event(
            AuditCheckpoint,
            subject=source.log,
            data=AuditCheckpointData.model_validate(record),
            source=f"privacy-plane.{service}",
            time=now,
        )
        box = outbox.Outbox()
        box.publish(topic, event)
        await outbox.write(conn, box.rows, schema)
    return Made(checkpoint, len(rows) >= max_entries)


async def oldest_uncovered(conn: Conn, source: LogSource) -> datetime | None:
    """When the first entry no checkpoint covers yet was recorded (None: all are covered)."""
    oldest: datetime | None = await conn.fetchval(source.oldest_uncovered, source.log)
    return oldest


async def stored(conn: Conn, log: str) -> list[Checkpoint]:
    """The database's own copy of a log's checkpoints (an export; not what verifiers trust)."""
    return [
        Checkpoint.from_record(orjson.loads(r["body"])) for r in await conn.fetch(PUBLISHED, log)
    ]
