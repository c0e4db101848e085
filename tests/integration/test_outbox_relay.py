"""The outbox relay on real Kafka and PostgreSQL: partition, order, headers, retries, deletes."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, RequestTimedOutError
from structlog.testing import capture_logs

from shared.plumbing import db, outbox
from shared.plumbing.kafka import make_producer
from shared.plumbing.outbox import OutboxRow
from shared.plumbing.relay import Relay, delete_sent
from tests.support.infra import Infra
from tests.support.kafka import read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
async def conn(infra: Infra, schema: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(infra.database_url)
    await db.migrate(connection, schema)
    await connection.execute(f'SET search_path TO "{schema}"')
    yield connection
    await connection.close()


def rows_for(topic: str, count: int, keys: int = 40) -> list[OutboxRow]:
    """Rows numbered by a `seq` header; every 5th is big (several batches per partition), every
    7th a tombstone, every 50th without a key (a random partition, as send() would)."""
    rows = []
    for i in range(count):
        key = None if i % 50 == 49 else f"usr_{i % keys}".encode()
        value = None if i % 7 == 6 and key else bytes(40_000 if i % 5 == 0 else 700)
        headers = {"ce_type": "consent.state", "seq": str(i)}
        if i % 11 == 0:
            headers["error"] = "contract: ü"
        rows.append(OutboxRow(topic, key, value, headers, f"e{i}"))
    return rows


async def write(conn: asyncpg.Connection, schema: str, rows: list[OutboxRow]) -> None:
    for start in range(0, len(rows), 100):  # several transactions, as handlers write them
        async with conn.transaction():
            await outbox.write(conn, rows[start : start + 100], schema)


def seq(record: Any) -> int:
    return int(dict(record.headers)["seq"])


@pytest.mark.parametrize("compression", ["none", "zstd"])  # zstd: the services' default
async def test_relay_sends_each_row_once_in_id_order_to_the_partition_send_picks(
    infra, topics, schema, conn, compression
):
    topic = topics.consent_changes  # not compacted: rows without a key are accepted
    rows = rows_for(topic, 900)
    await write(conn, schema, rows)
    producer = make_producer(infra.kafka, compression=compression)
    await producer.start()
    submitted: list[tuple[int, int]] = []
    real_send_batch = producer.send_batch

    async def send_batch(batch: Any, topic: str, *, partition: int) -> Any:
        submitted.append((partition, batch.record_count()))
        return await real_send_batch(batch, topic, partition=partition)

    producer.send_batch = send_batch
    try:
        relay = Relay(infra.database_url, schema, producer, service="test", batch_size=300)
        assert [await relay.publish_batch(conn) for _ in range(4)] == [300, 300, 300, 0]
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
        # what a plain send() picks, on a topic with as many partitions
        reference = {}
        for key in {r.key for r in rows if r.key is not None}:
            sent = await producer.send_and_wait(topics.deadletter, value=b"ref", key=key)
            reference[key] = sent.partition
    finally:
        await producer.stop()
    records = await read_topic(infra.kafka, topic, until=lambda r: len(r) >= 900, settle=0.5)
    assert sorted(seq(r) for r in records) == list(range(900))  # each once
    assert len({p for p, _ in submitted}) == 3
    assert len(submitted) > 3 * 3  # more than one batch per partition and relay batch
    by_partition: dict[int, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        row = rows[seq(record)]
        assert (record.key, record.value) == (row.key, row.value)
        assert dict(record.headers) == {k: v.encode() for k, v in row.headers.items()}
        if row.key is not None:
            assert record.partition == reference[row.key]
        by_partition[record.partition].append(seq(record))
    for partition, seqs in by_partition.items():
        assert seqs == sorted(seqs), partition  # id order per partition, hence per key


async def test_broker_errors_retry_the_same_rows_and_delete_only_after_the_broker_has_them(
    infra, topics, schema, conn
):
    topic = topics.consent_changes
    rows = rows_for(topic, 200)
    await write(conn, schema, rows)
    producer = make_producer(infra.kafka)
    await producer.start()
    real_send_batch = producer.send_batch
    calls = 0
    failed = asyncio.Event()

    async def send_batch(batch: Any, topic: str, *, partition: int) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # a partition was handed over, the next one cannot be
            failed.set()
            raise KafkaTimeoutError()
        future = await real_send_batch(batch, topic, partition=partition)
        if calls == 4:  # handed over, then the broker does not acknowledge it
            failed.set()
            lost = asyncio.get_running_loop().create_future()
            lost.set_exception(RequestTimedOutError())
            return lost
        return future

    producer.send_batch = send_batch
    try:
        relay = Relay(infra.database_url, schema, producer, service="test", batch_size=500)
        publishing = asyncio.create_task(relay.publish_batch(conn))
        observer = await asyncpg.connect(infra.database_url)
        try:
            for _ in range(2):
                await asyncio.wait_for(failed.wait(), 10)
                failed.clear()
                count = f'SELECT sum(messages) FROM "{schema}".outbox'
                assert await observer.fetchval(count) == 200  # nothing deleted yet
        finally:
            await observer.close()
        assert await asyncio.wait_for(publishing, 30) == 200
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
    finally:
        await producer.stop()
    records = await read_topic(infra.kafka, topic, until=lambda r: len(r) >= 200, settle=1.0)
    assert {seq(r) for r in records} == set(range(200))  # some twice: consumers dedup by id
    last: dict[bytes, int] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        if record.key is not None:
            last[record.key] = seq(record)
    assert all(last[key] == max(i for i, r in enumerate(rows) if r.key == key) for key in last)


async def test_the_after_send_seam_sees_each_batch_on_the_broker_and_still_in_the_outbox(
    infra, topics, schema, conn
):
    """The fault suite's `relay` kill point: Kafka has the batch, its rows are not deleted."""
    topic = topics.consent_changes
    await write(conn, schema, rows_for(topic, 250))
    producer = make_producer(infra.kafka)
    await producer.start()
    seen: list[tuple[int, int, int]] = []  # (batch, messages in the outbox, records on Kafka)

    async def after_send(count: int) -> None:
        sent = count + sum(s[0] for s in seen)
        on_kafka = await read_topic(infra.kafka, topic, until=lambda r: len(r) >= sent)
        waiting = await conn.fetchval("SELECT coalesce(sum(messages), 0) FROM outbox")
        seen.append((count, waiting, len(on_kafka)))

    try:
        relay = Relay(infra.database_url, schema, producer, service="test", batch_size=100)
        relay.after_send = after_send
        assert [await relay.publish_batch(conn) for _ in range(4)] == [100, 100, 50, 0]
    finally:
        await producer.stop()
    assert seen == [(100, 250, 100), (100, 150, 200), (50, 50, 250)]
    assert Relay.after_send is None  # unset in production


async def test_sent_rows_are_deleted_exactly_by_range_or_by_id(schema, conn):
    for row in rows_for("t", 10):  # ten transactions, ten outbox rows
        await outbox.write(conn, [row], schema)
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM outbox ORDER BY id")]
    await delete_sent(conn, ids[:4])  # no gap: one range
    # a gap: that row was not visible when the batch was read (its transaction committed
    # later), so it was not sent and must stay
    await delete_sent(conn, ids[4:5] + ids[6:])
    assert [r["id"] for r in await conn.fetch("SELECT id FROM outbox")] == [ids[5]]


async def test_a_record_larger_than_a_request_is_refused_before_anything_is_sent(
    infra, topics, schema, conn
):
    rows = [
        OutboxRow(topics.consent_changes, b"usr_1", b"small"),
        OutboxRow(topics.consent_changes, b"usr_1", bytes(1_100_000)),
    ]
    await write(conn, schema, rows)
    producer = make_producer(infra.kafka)
    await producer.start()
    try:
        relay = Relay(infra.database_url, schema, producer, service="test")
        with pytest.raises(MessageSizeTooLargeError):
            await relay._send(
                outbox.messages(await conn.fetch(outbox.SELECT_ALL))
            )  # as send() refuses it
    finally:
        await producer.stop()
    assert await read_topic(infra.kafka, topics.consent_changes, lambda r: False, timeout=2) == []


async def test_rows_of_the_one_message_form_are_relayed_in_id_order_with_packed_ones(
    infra, topics, schema, conn
):
    """A row written before packing (an upgrade with a backlog) goes out in its place."""
    topic = topics.consent_changes
    rows = rows_for(topic, 6, keys=1)
    await outbox.write(conn, rows[:2], schema)
    await conn.execute(
        "INSERT INTO outbox (topic, key, value, headers) VALUES ($1, $2, $3, $4)",
        topic,
        rows[2].key,
        rows[2].value,
        orjson.dumps(rows[2].headers).decode(),
    )
    await outbox.write(conn, rows[3:], schema)
    legacy = dataclasses.replace(rows[2], event_id=None)  # that form's reader skips the id
    assert await outbox.pending(conn) == [*rows[:2], legacy, *rows[3:]]
    producer = make_producer(infra.kafka)
    await producer.start()
    try:
        relay = Relay(infra.database_url, schema, producer, service="test", batch_size=3)
        assert [await relay.publish_batch(conn) for _ in range(3)] == [3, 3, 0]
    finally:
        await producer.stop()
    records = await read_topic(infra.kafka, topic, until=lambda r: len(r) >= 6, settle=0.5)
    assert [seq(r) for r in sorted(records, key=lambda r: r.offset)] == list(range(6))


async def set_max_message_bytes(kafka: str, topic: str, limit: int) -> None:
    """Set the topic's limit and wait until the broker applies it (the change travels through
    the metadata log: a send right after the request may still see the old limit)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        config = {"max.message.bytes": str(limit)}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, config)])
        for _ in range(100):
            (described,) = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]
            )
            entries = {e[0]: e[1] for r in described.resources for e in r[4]}
            if entries.get("max.message.bytes") == str(limit):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the broker did not apply max.message.bytes={limit} to {topic}")
    finally:
        await admin.close()


async def test_a_batch_the_broker_refuses_stalls_the_relay_only_until_the_cause_is_fixed(
    infra, topics, schema, conn
):
    """The broker refuses a record larger than the topic allows (the producer's own limit is
    higher). That producer can then never send to the partition again (OutOfOrderSequence
    Number), so the relay replaces it: once an operator raises the limit, the rows go out."""
    topic = topics.consent_changes
    await set_max_message_bytes(infra.kafka, topic, 20_000)
    big = os.urandom(50_000)  # random: zstd leaves it as large
    rows = [
        OutboxRow(topic, b"usr_1", value, {"seq": str(i)})
        for i, value in enumerate([b"before", big, b"after"])
    ]
    await write(conn, schema, rows)
    made: list[Any] = []

    def new_producer() -> Any:
        made.append(make_producer(infra.kafka, compression="zstd"))
        return made[-1]

    first = new_producer()
    await first.start()
    relay = Relay(infra.database_url, schema, first, service="test", new_producer=new_producer)
    publishing = asyncio.create_task(relay.publish_batch(conn))
    try:
        for _ in range(300):  # refused, retried with a new producer, refused again
            if len(made) >= 3:
                break
            await asyncio.sleep(0.1)
        assert len(made) >= 3
        assert not publishing.done()
        assert await conn.fetchval("SELECT sum(messages) FROM outbox") == 3  # nothing deleted
        await set_max_message_bytes(infra.kafka, topic, 1_000_000)
        assert await asyncio.wait_for(publishing, 30) == 3
    finally:
        publishing.cancel()
        await relay.producer.stop()
    assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
    records = await read_topic(infra.kafka, topic, until=lambda r: len(r) >= 3, settle=0.5)
    # "before" may be there twice (sent again with the refused batch), never out of order
    last_of = {seq(r): r.offset for r in records}
    assert sorted(last_of) == [0, 1, 2]
    assert last_of[0] < last_of[1] < last_of[2]
    assert [r.value for r in records if seq(r) == 1] == [big]


async def test_the_relay_outlives_any_failure_and_goes_on_publishing_on_a_new_connection(
    infra, topics, schema, conn
):
    """What asyncpg raises for a query issued while a restarting server closes the connection
    (InternalClientError, seen in the fault suite) once ended the relay silently, leaving every
    later event in the outbox. Now that and an error nobody expected are logged and retried."""
    topic = topics.consent_changes
    rows = [OutboxRow(topic, b"usr_1", str(i).encode(), {"seq": str(i)}) for i in range(6)]
    await write(conn, schema, rows[:3])
    producer = make_producer(infra.kafka)
    await producer.start()
    relay = Relay(infra.database_url, schema, producer, service="test", idle_wait=0.05)
    real = relay.publish_batch
    failures = [
        asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in"),
        RuntimeError("nobody expected this"),
    ]
    connections: list[int] = []

    async def failing_then_real(connection: asyncpg.Connection) -> int:
        connections.append(connection.get_server_pid())
        if failures:
            raise failures.pop(0)
        return await real(connection)

    relay.publish_batch = failing_then_real  # type: ignore[method-assign,assignment]
    stop = asyncio.Event()
    with capture_logs() as logs:
        running = asyncio.create_task(relay.run(stop))
        try:
            for _ in range(200):
                if await conn.fetchval("SELECT count(*) FROM outbox") == 0:
                    break
                await asyncio.sleep(0.05)
            await write(conn, schema, rows[3:])  # and it goes on
            records = await read_topic(infra.kafka, topic, until=lambda r: len(r) >= 6)
            assert not running.done()
        finally:
            stop.set()
            await asyncio.wait_for(running, 10)
            await producer.stop()
    assert [seq(r) for r in records] == [0, 1, 2, 3, 4, 5]
    assert len(set(connections[:3])) == 3  # each failure: a new connection (server pid)
    events = [(e["event"], e["log_level"]) for e in logs if "relay" in e["event"]]
    assert ("outbox_relay_db_error", "warning") in events
    assert ("outbox_relay_error", "error") in events
