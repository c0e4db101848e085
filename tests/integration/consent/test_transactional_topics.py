"""The consent side of relayed topics (transactions, commit markers, compaction) on real Kafka.

`consent.state` compacted by the broker while the consent service runs: a fresh reader and the
consent client get back exactly each subject's last state, erased subjects absent, whatever the
relay's transaction markers left in the log. A rebuild replays topics that end with a marker.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.consent.app import build_runtime
from services.consent.rebuild import rebuild
from services.consent.settings import ConsentSettings
from shared.consent_client import ConsentClient
from shared.contract.codec import encode
from shared.contract.topics import Topics
from shared.plumbing.clock import ManualClock
from shared.plumbing.kafka import TopicPolicy, ensure_topics, make_producer
from shared.plumbing.partitioning import murmur2
from tests.support import events as make
from tests.support.infra import Infra
from tests.support.kafka import produce

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
SUBJECTS = 30
ERASED = 5
ROUNDS = 6
COMPACT_FAST = {
    "cleanup.policy": "compact",
    "segment.ms": "300",  # a segment rolls at the first append 0.3 s after it began
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "100",  # tombstones go in a later cleaning
}


@pytest.fixture
async def running(infra: Infra) -> AsyncIterator[tuple[ConsentSettings, asyncpg.Connection]]:
    """The consent service on private topics whose consent.state compacts within seconds."""
    test_id = uuid.uuid4().hex[:10]
    topics = Topics().with_prefix(f"t{test_id}.")
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topics.consent_state, 3, 1, topic_configs=COMPACT_FAST)]
        )
    finally:
        await admin.close()
    await ensure_topics(infra.kafka, topics, TopicPolicy(partitions=3))
    settings = ConsentSettings(
        kafka_bootstrap_servers=infra.kafka,
        database_url=infra.database_url,
        db_schema=f"t_{test_id}",
        group_id=f"g-{test_id}",
        topics=topics,
        api_token="compaction-token",
        ledger_key="ledger-test-key-transactional",
        batch_timeout_ms=20,
        relay_batch_size=7,  # many transactions: commit markers all over the log
    )
    runtime = build_runtime(settings, ManualClock(T0 + timedelta(days=1)))
    await runtime.start()
    db = await asyncpg.connect(infra.database_url)
    try:
        yield settings, db
    finally:
        await runtime.stop()
        await db.execute(f'DROP SCHEMA IF EXISTS "{settings.db_schema}" CASCADE')
        await db.close()
        admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka)
        await admin.start()
        try:
            await admin.delete_topics(topics.all())
        finally:
            await admin.close()


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every committed record of `topic` from offset 0 up to its end now (a fresh reader)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        ends = await consumer.end_offsets(list(consumer.assignment()))
        records: list[Any] = []
        deadline = time.monotonic() + 20

        async def behind() -> bool:
            return any([await consumer.position(tp) < end for tp, end in ends.items()])

        while await behind():
            assert time.monotonic() < deadline, "the reader did not reach the end offsets"
            for part in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


def rollers(run: str, partitions: int = 3) -> list[str]:
    """One subject per partition of consent.state (the default partitioner's choice)."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < partitions:
        subject = f"usr_{run}_roller_{n}"
        found.setdefault((murmur2(subject.encode()) & 0x7FFFFFFF) % partitions, subject)
        n += 1
    return list(found.values())


async def wait_until(check: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while not (found := await check()):
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.5)
    return found


@pytest.mark.timeout(120)
async def test_a_compacted_consent_state_gives_readers_and_the_client_each_last_state(
    infra: Infra, running: tuple[ConsentSettings, asyncpg.Connection]
) -> None:
    settings, db = running
    topics, schema = settings.topics, settings.db_schema
    run = uuid.uuid4().hex[:6]
    subjects = [f"usr_{run}_{n}" for n in range(SUBJECTS)]
    minute = 0
    for round_ in range(ROUNDS):  # several segments, each subject's state in most of them
        changes: list[Any] = []
        for n, subject in enumerate(subjects):
            minute += 1
            change = make.granted if (n + round_) % 2 else make.withdrawn
            changes.append(change(subject, "marketing_email", at=T0 + timedelta(minutes=minute)))
        await produce(infra.kafka, topics.consent_changes, changes)
        await asyncio.sleep(0.4)
    erased = subjects[:ERASED]
    await produce(
        infra.kafka,
        topics.privacy_requests,
        [
            make.erasure(s, f"req_{s}", verified_by="support:a", source="portal", at=T0)
            for s in erased
        ],
    )

    async def settled() -> dict[str, int] | None:
        seen = await db.fetchval(f'SELECT count(*) FROM "{schema}".inbox')
        waiting = await db.fetchval(f'SELECT count(*) FROM "{schema}".outbox')
        if seen < SUBJECTS * ROUNDS + ERASED or waiting:
            return None
        rows = await db.fetch(f'SELECT subject_id, version FROM "{schema}".subjects')
        return {r["subject_id"]: int(r["version"]) for r in rows}

    expected: dict[str, int] = await wait_until(settled, 30, "the service applied everything")
    assert set(expected) == set(subjects[ERASED:])
    await asyncio.sleep(0.4)
    # one more change per partition rolls the segments holding everything above: cleanable now
    await produce(
        infra.kafka, topics.consent_changes, [make.granted(s, at=T0) for s in rollers(run)]
    )

    async def compacted() -> list[Any] | None:
        records = await read_all(infra.kafka, topics.consent_state)
        keys = [r.key.decode() for r in records if r.key.decode() in subjects]
        return records if len(keys) == len(set(keys)) else None

    records = await wait_until(compacted, 45, "consent.state compacted")
    last: dict[str, Any] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        last[record.key.decode()] = record.value and orjson.loads(record.value)["data"]
    assert {s: d["version"] for s, d in last.items() if s in expected and d} == expected
    assert all(last.get(s) is None for s in erased)  # a tombstone, or nothing once it is gone

    client = ConsentClient(infra.kafka, topics.consent_state)
    await client.start()
    try:
        async with asyncio.timeout(20):  # transaction markers end the log: still caught up
            await client.wait_until_caught_up()
        table = {s: client.cache.get(s) for s in subjects}
    finally:
        await client.stop()
    assert {s: c.version for s, c in table.items() if c is not None} == expected
    for subject, version in expected.items():
        cached = table[subject]
        assert cached is not None
        allowed = last[subject]["purposes"]["marketing_email"]["allowed"]
        assert (version, cached.allowed["marketing_email"]) == (version, allowed)
    assert all(s not in client.cache for s in erased)


async def test_a_rebuild_replays_topics_that_end_with_a_transaction_marker(
    infra: Infra, running: tuple[ConsentSettings, asyncpg.Connection]
) -> None:
    """Each partition of a transactional topic ends with a commit marker, one offset past its
    last record: a replay that waits for a record at the end offset never ends."""
    settings, db = running
    run = uuid.uuid4().hex[:6]
    producer = make_producer(infra.kafka, transactional_id=f"test-rebuild-{run}")
    await producer.start()
    try:
        async with producer.transaction():
            for n in range(12):
                change = make.granted(f"usr_{run}_{n}", at=T0 + timedelta(minutes=n))
                key, value = encode(change)
                await producer.send(settings.topics.consent_changes, value, key=key)
    finally:
        await producer.stop()

    async def applied() -> bool:
        schema = settings.db_schema
        return bool(await db.fetchval(f'SELECT count(*) FROM "{schema}".subjects') == 12)

    await wait_until(applied, 30, "the service applied the committed changes")
    into = f"{settings.db_schema}_rebuilt"
    try:
        assert await rebuild(settings, into, within_s=30) == 12
    finally:
        await db.execute(f'DROP SCHEMA IF EXISTS "{into}" CASCADE')
