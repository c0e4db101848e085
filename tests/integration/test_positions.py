"""Consumed positions stored with the data, and the seek to them on assignment (real Kafka+PG).

What a restore relies on: every batch stores the next offset per partition in its own
transaction (ignored records included), and a consumer whose database is behind Kafka's
committed offsets re-consumes from the database's positions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from shared.contract.codec import encode
from shared.contract.envelope import CloudEvent
from shared.contract.topics import Topics
from tests.integration.test_plumbing import (
    seen_rows,
    signed_up,
    toy_runtime,
    toy_settings,
    wait_rows,
)
from tests.support import events as make
from tests.support.infra import Infra

pytestmark = pytest.mark.integration


async def produce_at(
    bootstrap: str, topic: str, events: Sequence[CloudEvent[Any]]
) -> dict[tuple[str, int], int]:
    """Produce `events` in order; (topic, partition) -> the offset after the last one written."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    ends: dict[tuple[str, int], int] = {}
    try:
        for event in events:
            key, value = encode(event)
            meta = await (await producer.send(topic, value=value, key=key))
            ends[(meta.topic, meta.partition)] = meta.offset + 1
    finally:
        await producer.stop()
    return ends


async def sql(infra: Infra, schema: str, statement: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(infra.database_url)
    try:
        await conn.execute(f'SET search_path TO "{schema}"')
        return list(await conn.fetch(statement, *args))
    finally:
        await conn.close()


async def stored(infra: Infra, schema: str) -> dict[tuple[str, int], int]:
    rows = await sql(infra, schema, "SELECT topic, partition, next_offset FROM consumed_positions")
    return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}


async def consume_all(
    infra: Infra, topics: Topics, schema: str, count: int, ends: dict[tuple[str, int], int]
) -> None:
    """Run the toy service until `count` rows are seen and positions reach `ends`; stop it."""
    runtime = toy_runtime(toy_settings(infra, topics, schema))
    await runtime.start()
    try:
        await wait_rows(infra, schema, count)
        for _ in range(100):
            if await stored(infra, schema) == ends:
                break
            await asyncio.sleep(0.1)
    finally:
        await runtime.stop()


async def test_each_batch_stores_the_next_offset_of_every_partition_ignored_records_too(
    infra, topics, schema
):
    events = [signed_up(f"usr_{i}") for i in range(12)]
    ignored = [make.granted(f"usr_{i}") for i in range(12, 18)]  # a type the toy ignores
    ends = await produce_at(infra.kafka, topics.accounts_lifecycle, [*events, *ignored])

    await consume_all(infra, topics, schema, len(events), ends)

    assert await stored(infra, schema) == ends


async def test_a_database_behind_kafka_reconsumes_from_its_own_positions(infra, topics, schema):
    before = [signed_up(f"usr_a{i}") for i in range(6)]
    ends = await produce_at(infra.kafka, topics.accounts_lifecycle, before)
    await consume_all(infra, topics, schema, len(before), ends)
    backup_point = await stored(infra, schema)  # what a backup taken now would hold
    seen_at_backup = [r["event_id"] for r in await seen_rows(infra, schema)]

    after = [signed_up(f"usr_b{i}") for i in range(9)]
    ends |= await produce_at(infra.kafka, topics.accounts_lifecycle, after)
    await consume_all(infra, topics, schema, len(before) + len(after), ends)  # Kafka commits

    # "Restore": the data and positions go back to the backup point; Kafka's offsets do not.
    await sql(infra, schema, "DELETE FROM toy_seen WHERE NOT (event_id = ANY($1))", seen_at_backup)
    await sql(infra, schema, "DELETE FROM inbox WHERE NOT (event_id = ANY($1))", seen_at_backup)
    await sql(infra, schema, "DELETE FROM consumed_positions")
    for (topic, partition), offset in backup_point.items():
        await sql(
            infra,
            schema,
            "INSERT INTO consumed_positions VALUES ($1, $2, $3)",
            topic,
            partition,
            offset,
        )

    await consume_all(infra, topics, schema, len(before) + len(after), ends)

    rows = await seen_rows(infra, schema)
    assert sorted(r["event_id"] for r in rows) == sorted(e.id for e in [*before, *after])


async def test_without_positions_kafka_offsets_hold_unless_the_schema_was_restored(
    infra, topics, schema
):
    events = [signed_up(f"usr_c{i}") for i in range(6)]
    ends = await produce_at(infra.kafka, topics.accounts_lifecycle, events)
    await consume_all(infra, topics, schema, len(events), ends)
    for table in ("consumed_positions", "toy_seen", "inbox"):
        await sql(infra, schema, f"DELETE FROM {table}")

    runtime = toy_runtime(toy_settings(infra, topics, schema))
    await runtime.start()
    await asyncio.sleep(2.0)  # a consumer that would re-read has done so by now
    await runtime.stop()
    assert await seen_rows(infra, schema) == []  # Kafka's committed offsets were kept

    await sql(
        infra, schema, "INSERT INTO restores (backup_taken_at, backup) VALUES (now(), 'test')"
    )
    await consume_all(infra, topics, schema, len(events), ends)
    assert len(await seen_rows(infra, schema)) == len(events)  # after a restore: the earliest
