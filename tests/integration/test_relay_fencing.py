"""Fenced publishing on real Kafka and PostgreSQL: a deposed leader's batch never lands after its
successor's; a failed transaction is aborted and its rows go again; a standby fences nobody."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from structlog.testing import capture_logs

from shared.plumbing import db, outbox
from shared.plumbing.kafka import make_producer
from shared.plumbing.outbox import OutboxRow
from shared.plumbing.relay import Relay

pytestmark = pytest.mark.integration

LOCK_HOLDER = """
SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND d.datname = current_database()
  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtext($1)::bigint
"""


@pytest.fixture
async def conn(infra: Any, schema: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(infra.database_url)
    await db.migrate(connection, schema)
    await connection.execute(f'SET search_path TO "{schema}"')
    yield connection
    await connection.close()


def factory(bootstrap: str) -> Callable[[], AIOKafkaProducer]:
    """Unstarted transactional producers of one private transactional id (one "service")."""
    transactional_id = f"test-relay-{uuid.uuid4().hex[:8]}"
    return lambda: make_producer(bootstrap, compression="zstd", transactional_id=transactional_id)


async def write(conn: asyncpg.Connection, schema: str, topic: str, seqs: range) -> None:
    """One row per transaction; `seq` is also the version: higher is newer, per key."""
    for i in seqs:
        row = OutboxRow(topic, f"usr_{i % 10}".encode(), str(i).encode(), {"seq": str(i)})
        async with conn.transaction():
            await outbox.write(conn, [row], schema)


async def read(bootstrap: str, topic: str, isolation: str, count: int) -> list[Any]:
    """Records of `topic` from offset 0 (at least `count`, else what came within 20 s)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=isolation,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + 20
        while len(records) < count and time.monotonic() < deadline:
            for part in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(part)
        await asyncio.sleep(0.5)
        for part in (await consumer.getmany(timeout_ms=500)).values():
            records.extend(part)
        return records
    finally:
        await consumer.stop()


def last_per_key(records: list[Any]) -> dict[bytes, int]:
    last: dict[bytes, int] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        last[r.key] = int(r.value)
    return last


def highest_per_key(records: list[Any]) -> dict[bytes, int]:
    highest: dict[bytes, int] = {}
    for r in records:
        highest[r.key] = max(int(r.value), highest.get(r.key, -1))
    return highest


async def until(check: Callable[[], Any], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_leader_deposed_mid_batch_is_fenced_and_its_successor_publishes_last(
    infra, topics, schema, conn
):
    topic = topics.consent_state  # compacted: the last record per key is what stays
    await write(conn, schema, topic, range(0, 40))
    make = factory(infra.kafka)
    held, release = asyncio.Event(), asyncio.Event()
    first = make()
    real_send_batch = first.send_batch

    async def send_batch(batch: Any, topic: str, *, partition: int) -> Any:
        if not release.is_set():  # the first batch stays in flight until released
            held.set()
            await release.wait()
        return await real_send_batch(batch, topic, partition=partition)

    first.send_batch = send_batch  # type: ignore[method-assign]
    old = Relay(infra.database_url, schema, first, service="fence-old", new_producer=make)
    new = Relay(infra.database_url, schema, make(), service="fence-new", new_producer=make)
    stop_old, stop_new = asyncio.Event(), asyncio.Event()
    with capture_logs() as logs:
        running_old = asyncio.create_task(old.run(stop_old))
        try:
            await asyncio.wait_for(held.wait(), 20)
            await write(conn, schema, topic, range(40, 80))  # newer versions of the same keys
            backend = await conn.fetchval(LOCK_HOLDER, f"relay:{schema}")
            assert backend is not None
            await conn.execute("SELECT pg_terminate_backend($1)", backend)
            running_new = asyncio.create_task(new.run(stop_new))

            async def all_published() -> bool:
                return bool(await conn.fetchval("SELECT count(*) FROM outbox") == 0)

            await until(all_published)  # the successor published rows 0..79 and deleted them
            release.set()  # the deposed leader's batch goes on now

            async def old_stepped_down() -> bool:
                return any(e["event"] == "outbox_relay_stepped_down" for e in logs)

            await until(old_stepped_down)
        finally:
            release.set()
            stop_old.set()
            stop_new.set()
            await asyncio.wait_for(running_old, 20)
            if "running_new" in locals():
                await asyncio.wait_for(running_new, 20)
            await new.producer.stop()
    committed = await read(infra.kafka, topic, "read_committed", 80)
    assert sorted({int(r.value) for r in committed}) == list(range(80))  # none lost
    assert last_per_key(committed) == highest_per_key(committed)  # none stale
    assert last_per_key(committed) == {f"usr_{k}".encode(): 70 + k for k in range(10)}
    stepped = [e for e in logs if e["event"] == "outbox_relay_stepped_down"]
    assert stepped
    assert all("ProducerFenced" in e["reason"] for e in stepped)


async def test_a_failed_transaction_is_aborted_and_its_rows_go_again_once(
    infra, topics, schema, conn
):
    topic = topics.consent_changes
    await write(conn, schema, topic, range(0, 30))
    make = factory(infra.kafka)
    producer = make()
    real_send_batch = producer.send_batch
    calls = 0

    async def send_batch(batch: Any, topic: str, *, partition: int) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # after one partition's batch went out: the transaction is half sent
            raise KafkaTimeoutError("injected")
        return await real_send_batch(batch, topic, partition=partition)

    producer.send_batch = send_batch  # type: ignore[method-assign]
    relay = Relay(infra.database_url, schema, producer, service="fence-abort", new_producer=make)
    stop = asyncio.Event()
    with capture_logs() as logs:
        running = asyncio.create_task(relay.run(stop))
        try:

            async def all_published() -> bool:
                return bool(await conn.fetchval("SELECT count(*) FROM outbox") == 0)

            await until(all_published)
        finally:
            stop.set()
            await asyncio.wait_for(running, 20)
    committed = await read(infra.kafka, topic, "read_committed", 30)
    everything = await read(infra.kafka, topic, "read_uncommitted", 31)
    assert sorted(int(r.value) for r in committed) == list(range(30))  # each once
    assert len(everything) > 30  # the aborted half is on the log, hidden from read_committed
    assert [e["event"] for e in logs if "relay" in e["event"]].count(
        "outbox_relay_stepped_down"
    ) == 0


async def test_a_standby_fences_nobody_and_takes_over_when_the_leader_stops(
    infra, topics, schema, conn
):
    topic = topics.consent_changes
    make = factory(infra.kafka)
    first = Relay(infra.database_url, schema, make(), service="fence-a", new_producer=make)
    second = Relay(infra.database_url, schema, make(), service="fence-b", new_producer=make)
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    with capture_logs() as logs:
        running = [
            asyncio.create_task(first.run(stop_first)),
            asyncio.create_task(second.run(stop_second)),
        ]
        try:

            async def led() -> bool:
                return first.leader or second.leader

            await until(led)
            leader, standby = (first, second) if first.leader else (second, first)
            stop_leader = stop_first if leader is first else stop_second
            for start in range(0, 60, 20):
                await write(conn, schema, topic, range(start, start + 20))
                await asyncio.sleep(0.3)
            assert leader.leader
            assert not standby.leader
            assert standby.producer._sender.sender_task is None  # never started: fenced nobody
            stop_leader.set()  # drains, gives up the lock: the standby leads

            async def standby_leads() -> bool:
                return standby.leader

            await until(standby_leads)
            await write(conn, schema, topic, range(60, 80))

            async def drained() -> bool:
                return bool(await conn.fetchval("SELECT count(*) FROM outbox") == 0)

            await until(drained)
        finally:
            stop_first.set()
            stop_second.set()
            await asyncio.wait_for(asyncio.gather(*running), 20)
    committed = await read(infra.kafka, topic, "read_committed", 80)
    assert sorted(int(r.value) for r in committed) == list(range(80))  # each once
    assert not [e for e in logs if e["event"] == "outbox_relay_stepped_down"]
