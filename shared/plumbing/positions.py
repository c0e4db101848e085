"""Consumed positions stored with the data they produced, and the seek to them on assignment.

Each batch's transaction upserts, per (topic, partition), the offset after its last record
(`Pipeline._commit_together`). When the consumer is assigned partitions it seeks to those
positions before fetching, so a database restored from a backup re-consumes everything Kafka
still holds after the backup point (the inbox makes that idempotent) instead of starting at
Kafka's committed offsets, which are ahead of the restored data. Where the database holds no
position, Kafka's committed offset (or the earliest) stays; after a restore, the earliest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from shared.plumbing.db import Conn, is_transient
from shared.plumbing.deadletters import RecordLike
from shared.plumbing.logging import get_logger

log = get_logger(__name__)

Positions = Mapping[tuple[str, int], int]
"""(topic, partition) -> the next offset to consume."""
NONE: Positions = MappingProxyType({})

STORE = """
INSERT INTO consumed_positions (topic, partition, next_offset)
SELECT * FROM unnest($1::text[], $2::integer[], $3::bigint[])
ON CONFLICT (topic, partition) DO UPDATE
SET next_offset = GREATEST(consumed_positions.next_offset, EXCLUDED.next_offset)
"""
LOAD = """
SELECT topic, partition, next_offset FROM consumed_positions
JOIN unnest($1::text[], $2::integer[]) AS k(t, p) ON topic = k.t AND partition = k.p
"""
RESTORED = "SELECT EXISTS (SELECT 1 FROM restores)"
RESTORED_AFTER = "SELECT max(restored_at) FROM restores WHERE restored_at > $1"


def next_offsets(records: Iterable[RecordLike]) -> dict[tuple[str, int], int]:
    """The position after each partition's last record of a batch (its max offset + 1)."""
    positions: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic, record.partition)
        if record.offset + 1 > positions.get(key, -1):
            positions[key] = record.offset + 1
    return positions


async def store(conn: Conn, positions: Positions) -> None:
    """Upsert a batch's positions: one statement, in the batch's transaction.

    GREATEST: a replica's late commit of an older batch after a rebalance must not move a
    position back (that would only replay, but needlessly)."""
    if not positions:
        return
    keys = sorted(positions)  # one lock order for every writer
    await conn.execute(
        STORE, [t for t, _ in keys], [p for _, p in keys], [positions[k] for k in keys]
    )


async def load(conn: Conn, partitions: Iterable[tuple[str, int]]) -> tuple[dict[Any, int], bool]:
    """The stored positions of `partitions`, and whether this schema was ever restored."""
    keys = list(partitions)
    rows = await conn.fetch(LOAD, [t for t, _ in keys], [p for _, p in keys])
    restored = bool(await conn.fetchval(RESTORED))
    return {(r["topic"], r["partition"]): int(r["next_offset"]) for r in rows}, restored


async def restored_after(conn: Conn, at: datetime) -> datetime | None:
    """When this schema was last restored, if after `at` (what it derived since may be lost)."""
    found: datetime | None = await conn.fetchval(RESTORED_AFTER, at)
    return found


class SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]
    """Rebalance listener: on assignment, seek each partition to the database's position.

    The partitions are paused before the first await, so nothing is fetched from Kafka's
    committed offset while the positions are read, and resumed once the seeks are done.
    The database being down is retried here (aiokafka would swallow an error and consume from
    the committed offsets, skipping what a restored database has not seen).
    """

    def __init__(self, consumer: Callable[[], AIOKafkaConsumer | None], pool: Callable[[], Any]):
        self._consumer = consumer
        self._pool = pool

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Nothing to do: positions are written with the batches themselves."""

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Pause, read the stored positions, seek, resume."""
        consumer = self._consumer()
        if consumer is None or not assigned:
            return
        consumer.pause(*assigned)
        try:
            stored, restored = await self._read(assigned)
            for tp in sorted(assigned):
                position = stored.get((tp.topic, tp.partition))
                if position is not None:
                    consumer.seek(tp, position)
                elif restored:
                    await consumer.seek_to_beginning(tp)
            await self._warn_of_gaps(consumer, stored)
            log.info("positions_restored", partitions=len(assigned), stored=len(stored))
        finally:
            consumer.resume(*assigned)

    async def _read(self, assigned: set[TopicPartition]) -> tuple[dict[Any, int], bool]:
        delay = 0.2
        while True:
            pool: asyncpg.Pool | None = self._pool()
            try:
                if pool is None:
                    raise ConnectionError("the pool is not open yet")
                async with pool.acquire() as conn:
                    return await load(conn, [(tp.topic, tp.partition) for tp in assigned])
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("positions_unreadable_retrying", error=str(exc)[:200])
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _warn_of_gaps(self, consumer: AIOKafkaConsumer, stored: dict[Any, int]) -> None:
        """Log positions Kafka no longer holds: records between them and the log start are gone
        (a backup older than the topic's retention, see docs/runbooks/backup-restore.md)."""
        tps = [TopicPartition(t, p) for t, p in stored]
        if not tps:
            return
        try:
            starts = await consumer.beginning_offsets(tps)
        except Exception as exc:  # only a warning is at stake
            log.warning("positions_gap_check_failed", error=str(exc)[:200])
            return
        for tp, start in starts.items():
            if stored[(tp.topic, tp.partition)] < start:
                log.error(
                    "positions_behind_retention",
                    topic=tp.topic,
                    partition=tp.partition,
                    stored=stored[(tp.topic, tp.partition)],
                    log_start=start,
                )
