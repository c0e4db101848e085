"""The transactional outbox and its relay.

Rows are written in the transaction that causes them; one relay per service (the holder of an
advisory lock) publishes them in id order with an idempotent producer and then deletes them.
A crash between publish and delete republishes the same events (same ids): consumers dedup.

A transaction's messages are packed into one row (`packed`, `messages` of them): one insert,
one read and one delete per consumed batch instead of one of each per message. Rows of the
one-message form (written before 0002) are still relayed, in the same id order.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner

from shared.contract.codec import encode
from shared.contract.envelope import CloudEvent
from shared.plumbing import metrics
from shared.plumbing.db import Conn, is_database_failure
from shared.plumbing.logging import get_logger

log = get_logger(__name__)

INSERT_PACKED = """
WITH inserted AS (INSERT INTO outbox (packed, messages) VALUES ($1, $2))
SELECT pg_notify($3, '')
"""
SELECT_NEXT = "SELECT id, messages FROM outbox ORDER BY id LIMIT $1"
SELECT_ROWS = """
SELECT id, topic, key, value, headers, packed FROM outbox WHERE id = ANY($1::bigint[]) ORDER BY id
"""
SELECT_ALL = "SELECT id, topic, key, value, headers, packed FROM outbox ORDER BY id"
DELETE_SENT = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"
DELETE_RANGE = "DELETE FROM outbox WHERE id BETWEEN $1 AND $2"
COUNT_BACKLOG = "SELECT coalesce(sum(messages), 0) FROM outbox"
TRY_LOCK = "SELECT pg_try_advisory_lock(hashtext($1))"
COMMAND_TIMEOUT = 60.0
"""Seconds any statement of the relay may take."""


def channel(schema: str) -> str:
    """The NOTIFY channel that wakes the relay of `schema`."""
    return f"outbox_{schema}"


@dataclass(frozen=True)
class OutboxRow:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, str] = field(default_factory=dict)
    event_id: str | None = None


@dataclass
class Outbox:
    """What one transaction will publish; handlers add to it, the pipeline writes it."""

    rows: list[OutboxRow] = field(default_factory=list)

    def publish(self, topic: str, event: CloudEvent[Any]) -> None:
        """Publish `event` keyed by its subject once the transaction commits."""
        key, value = encode(event)
        self.rows.append(OutboxRow(topic, key, value, {"ce_type": event.type}, event.id))

    def tombstone(self, topic: str, key: str) -> None:
        """Publish a tombstone (null value) for `key` on a compacted topic."""
        self.rows.append(OutboxRow(topic, key.encode(), None))

    def raw(self, row: OutboxRow) -> None:
        """Publish a prepared row (dead letters)."""
        self.rows.append(row)


async def write(conn: Conn, rows: list[OutboxRow], schema: str) -> None:
    """Insert `rows` in the caller's transaction and wake the relay at commit (one statement)."""
    if not rows:
        return
    await conn.execute(INSERT_PACKED, pack(rows), len(rows), channel(schema))


PACK_VERSION = b"\x01"
_LENGTHS = struct.Struct("<IiiII")
"""Per message: topic, key, value, headers (JSON), event id; -1 for a null key or value."""


def pack(rows: Sequence[OutboxRow]) -> bytes:
    """Messages as one `packed` value: per message its lengths, then its bytes."""
    lengths = _LENGTHS.pack
    dumps = orjson.dumps
    topics: dict[str, bytes] = {}
    headers_of: dict[int, bytes] = {}  # by identity: handlers share one dict per event type
    parts = [PACK_VERSION]
    extend = parts.extend
    for row in rows:
        topic = topics.get(row.topic)
        if topic is None:
            topic = topics[row.topic] = row.topic.encode()
        headers = headers_of.get(id(row.headers))
        if headers is None:
            headers = headers_of[id(row.headers)] = dumps(row.headers)
        key, value, event_id = row.key, row.value, row.event_id
        event = event_id.encode() if event_id else b""
        extend(
            (
                lengths(
                    len(topic),
                    -1 if key is None else len(key),
                    -1 if value is None else len(value),
                    len(headers),
                    len(event),
                ),
                topic,
                key or b"",
                value or b"",
                headers,
                event,
            )
        )
    return b"".join(parts)


Message = tuple[str, bytes | None, bytes | None, bytes | str]
"""(topic, key, value, headers as JSON) as the relay sends it."""


def unpack(packed: bytes) -> list[OutboxRow]:
    """The rows `pack` packed (headers parsed; an empty event id reads as None)."""
    ids: list[str | None] = []
    return [
        OutboxRow(topic, key, value, orjson.loads(headers), event_id)
        for (topic, key, value, headers), event_id in zip(_unpacked(packed, ids), ids, strict=True)
    ]


def _unpacked(packed: bytes, ids: list[str | None] | None = None) -> list[Message]:
    """The messages of a packed value; their event ids go to `ids` if given."""
    if packed[:1] != PACK_VERSION:
        raise ValueError(f"outbox: unknown packing {packed[:1]!r}")
    unpack_from = _LENGTHS.unpack_from
    size = _LENGTHS.size
    topics: dict[bytes, str] = {}
    out: list[Message] = []
    append = out.append
    at, end = 1, len(packed)
    while at < end:
        t, k, v, h, e = unpack_from(packed, at)
        at += size
        raw_topic = packed[at : at + t]
        topic = topics.get(raw_topic)
        if topic is None:
            topic = topics[raw_topic] = raw_topic.decode()
        at += t
        key = None
        if k >= 0:
            key = packed[at : at + k]
            at += k
        value = None
        if v >= 0:
            value = packed[at : at + v]
            at += v
        append((topic, key, value, packed[at : at + h]))
        at += h
        if ids is not None:
            ids.append(packed[at : at + e].decode() or None)
        at += e
    return out


def messages(rows: Sequence[asyncpg.Record]) -> list[Message]:
    """The messages of outbox rows of either form, in order."""
    out: list[Message] = []
    for _, topic, key, value, headers, packed in rows:
        if packed is None:
            out.append((topic, key, value, headers))
        else:
            out.extend(_unpacked(packed))
    return out


async def pending(conn: Conn) -> list[OutboxRow]:
    """Every row not yet relayed, one per message, in order (tests and operators)."""
    out: list[OutboxRow] = []
    for record in await conn.fetch(SELECT_ALL):
        if record["packed"] is None:
            headers = orjson.loads(record["headers"])
            out.append(OutboxRow(record["topic"], record["key"], record["value"], headers))
        else:
            out.extend(unpack(record["packed"]))
    return out


class Relay:
    """Publishes outbox rows while it holds the service's relay lock; others stand by."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        producer: AIOKafkaProducer,
        *,
        service: str,
        batch_size: int = 1000,
        idle_wait: float = 0.5,
        backlog_every: float = 5.0,
        new_producer: Callable[[], AIOKafkaProducer] | None = None,
    ) -> None:
        """`new_producer` makes (unstarted) the producer that replaces one whose batch the
        broker refused; without it the relay keeps `producer` whatever happens."""
        self._dsn = dsn
        self._schema = schema
        self._producer = producer
        self._new_producer = new_producer
        self._service = service
        self._batch_size = batch_size
        self._idle_wait = idle_wait
        self._backlog_every = backlog_every
        self._backlog_at = 0.0
        self._wake = asyncio.Event()
        self._partitions = PartitionCache()
        self._headers: dict[bytes | str, list[tuple[str, bytes]]] = {}
        self._heartbeat = metrics.OUTBOX_RELAY_HEARTBEAT.labels(service)
        self.leader = False

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set, reconnecting after failures; drains before returning.

        No failure ends it: a relay that stopped would leave every later event of the service
        in its outbox. Database outages are retried quietly; anything else is logged loudly
        and retried too, on a new connection.
        """
        while not stop.is_set():
            self._beat()
            try:
                await self._lead(stop)
            except Exception as exc:
                self.leader = False
                if is_database_failure(exc):
                    log.warning(
                        "outbox_relay_db_error", service=self._service, error=str(exc)[:200]
                    )
                else:
                    log.error(
                        "outbox_relay_error",
                        service=self._service,
                        error=f"{type(exc).__name__}: {exc}"[:300],
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    async def _lead(self, stop: asyncio.Event) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn,
            # Its only writes are the deletes of sent rows: one lost in a database crash means
            # those rows are sent again (same ids, consumers dedup), as after a relay crash.
            server_settings={"search_path": self._schema, "synchronous_commit": "off"},
            # no statement of the relay takes long: one that hangs (a connection the server
            # dropped without the client noticing) raises, and the relay reconnects
            command_timeout=COMMAND_TIMEOUT,
        )
        try:
            while not await conn.fetchval(TRY_LOCK, f"relay:{self._schema}"):
                self._beat()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
                if stop.is_set():
                    return
            self.leader = True
            log.info("outbox_relay_leading", service=self._service)
            await conn.add_listener(channel(self._schema), self._on_notify)
            while not stop.is_set():
                self._beat()
                if await self.publish_batch(conn) == 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._idle_wait)
            while await self.publish_batch(conn):  # drain on shutdown
                pass
        finally:
            self.leader = False
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)

    @property
    def producer(self) -> AIOKafkaProducer:
        """The producer in use (another one after a renewal): its owner stops it."""
        return self._producer

    def _beat(self) -> None:
        """The relay is going round (a hung one stops beating: PrivacyPlaneOutboxRelayStalled)."""
        self._heartbeat.set_to_current_time()

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _renew(self, reason: BaseException) -> None:
        """Replace the producer, once everything it was sending has finished.

        A batch the broker refuses for good (too large for the topic, say) has taken sequence
        numbers the broker never recorded, so every later batch of that producer to that
        partition fails with OutOfOrderSequenceNumber, even once the cause is fixed. A new
        producer (a new producer id) starts its sequences afresh. The old one is stopped first:
        it flushes or fails what it still holds, so nothing of it can land after the new one.
        """
        if self._new_producer is None:
            return
        with contextlib.suppress(Exception):
            await self._producer.stop()
        while True:
            fresh = self._new_producer()
            try:
                await fresh.start()
                break
            except Exception as exc:
                log.warning("outbox_producer_start_failed", error=str(exc)[:200])
                with contextlib.suppress(Exception):
                    await fresh.stop()
                await asyncio.sleep(1.0)
        self._producer = fresh
        metrics.OUTBOX_PRODUCER_RENEWED.labels(self._service).inc()
        log.warning("outbox_producer_renewed", service=self._service, after=type(reason).__name__)

    async def publish_batch(self, conn: asyncpg.Connection) -> int:
        """Publish up to one batch (whole rows, at least one) in id order; returns how many
        messages were sent."""
        ids, count = [], 0
        for row_id, row_messages in await conn.fetch(SELECT_NEXT, self._batch_size):
            ids.append(row_id)
            count += row_messages
            if count >= self._batch_size:
                break
        if not ids:
            metrics.OUTBOX_BACKLOG.labels(self._service).set(0)
            return 0
        batch = messages(await conn.fetch(SELECT_ROWS, ids))
        while True:
            try:
                await self._send(batch)
                break
            except Exception as exc:  # broker errors: retry the same rows, never skip
                log.warning("outbox_publish_retry", service=self._service, error=str(exc)[:200])
                self._beat()
                await asyncio.sleep(1.0)
                if refused(exc):
                    await self._renew(exc)
        await delete_sent(conn, ids)
        metrics.OUTBOX_PUBLISHED.labels(self._service).inc(len(batch))
        now = time.monotonic()
        if count >= self._batch_size and now - self._backlog_at >= self._backlog_every:
            # the sum scans the whole backlog: refreshed now and then, not after every batch
            self._backlog_at = now
            metrics.OUTBOX_BACKLOG.labels(self._service).set(await conn.fetchval(COUNT_BACKLOG))
        return len(batch)

    async def _send(self, batch: Sequence[Message]) -> None:
        """Send `batch` (topic, key, value, headers) and wait until the broker has them all.

        One record batch per partition (more when one fills up), filled in id order and handed
        over with `send_batch`: the accumulator queues it behind anything already queued for
        that partition, and the idempotent producer numbers it when it is drained, as it does
        the batches `send()` fills. Each record goes to the partition `send()` would pick.
        """
        producer = self._producer
        builders: dict[tuple[str, int], list[Any]] = {}
        pick: dict[str, Callable[[bytes | None], int]] = {}
        headers_of = self._headers
        for topic, key, value, raw_headers in batch:
            partition_of = pick.get(topic)
            if partition_of is None:
                partition_of = pick[topic] = await self._partitions.picker(producer, topic)
            headers = headers_of.get(raw_headers)
            if headers is None:
                if len(headers_of) >= HEADERS_CACHE:
                    headers_of.clear()
                headers = headers_of[raw_headers] = [
                    (k, str(v).encode()) for k, v in orjson.loads(raw_headers).items()
                ]
            if value is not None and len(value) > CHECK_SIZE_FROM:
                producer._serialize(key, value, headers)  # too large: raises as send() would
            tp = (topic, partition_of(key))
            queue = builders.get(tp)
            if queue is None:
                queue = builders[tp] = [producer.create_batch()]
            if queue[-1].append(timestamp=None, key=key, value=value, headers=headers) is None:
                queue.append(producer.create_batch())  # full: the first record always fits
                queue[-1].append(timestamp=None, key=key, value=value, headers=headers)
        futures: list[asyncio.Future[Any]] = []
        try:
            # the first batch of every partition, then the second ones (which wait until the
            # first of their partition is drained), and so on
            for depth in range(max(len(q) for q in builders.values())):
                for (topic, partition), queue in builders.items():
                    if depth < len(queue):
                        queue[depth].close()
                        futures.append(
                            await producer.send_batch(queue[depth], topic, partition=partition)
                        )
        except BaseException:
            for future in futures:  # those already queued may still fail: nobody waits now
                future.add_done_callback(_consume)
            raise
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome


def refused(exc: BaseException) -> bool:
    """Whether the broker (or the client on its behalf) refused a batch for good, rather than
    not answering in time: retrying it with the same producer cannot succeed."""
    return (
        isinstance(exc, KafkaError) and not exc.retriable and not isinstance(exc, KafkaTimeoutError)
    )


async def delete_sent(conn: Conn, ids: list[int]) -> None:
    """Delete exactly the rows `ids` (ascending): a range when they leave no gap, since then
    no other row can lie in it (a gap may be a row whose transaction commits later)."""
    if ids[-1] - ids[0] + 1 == len(ids):
        await conn.execute(DELETE_RANGE, ids[0], ids[-1])
    else:
        await conn.execute(DELETE_SENT, ids)


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


CHECK_SIZE_FROM = 64 * 1024
"""Values above this size are checked against the producer's max_request_size, as `send()`
checks every record (the broker would refuse the batch and burn its sequence numbers)."""

HEADERS_CACHE = 1024
"""Distinct header documents kept parsed (event types; dead letters are each different)."""


class PartitionCache:
    """The partition of each key as the producer's partitioner picks it in `send()`.

    With aiokafka's default partitioner (murmur2 of the key, as the Java client) a key's
    partition depends only on the topic's partitions: results are kept per topic while that
    set stays the same, up to `limit` keys per topic. Null keys (random partition) and other
    partitioners are asked every time, with the arguments `send()` gives them.
    """

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._topics: dict[str, tuple[frozenset[int], list[int], dict[bytes, int]]] = {}

    async def picker(self, producer: AIOKafkaProducer, topic: str) -> Callable[[bytes | None], int]:
        """A function key -> partition for `topic` (waits for the topic's metadata)."""
        partitions = await producer.partitions_for(topic)
        partitioner = producer._partitioner
        all_partitions = list(partitions)
        available = list(producer.client.cluster.available_partitions_for_topic(topic) or ())
        if not isinstance(partitioner, DefaultPartitioner):
            return lambda key: int(partitioner(key, all_partitions, available))
        entry = self._topics.get(topic)
        if entry is None or entry[0] != partitions or len(entry[2]) >= self.limit:
            entry = self._topics[topic] = (frozenset(partitions), all_partitions, {})
        _, ordered, known = entry
        count = len(ordered)

        def partition_of(key: bytes | None) -> int:
            if key is None:
                return int(partitioner(None, all_partitions, available))
            partition = known.get(key)
            if partition is None:
                partition = known[key] = ordered[(murmur2(key) & 0x7FFFFFFF) % count]
            return partition

        return partition_of


_M = 0x5BD1E995
_WORDS: dict[int, Callable[[bytes], tuple[int, ...]]] = {}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (Java client `Utils.murmur2`), equal to aiokafka's, about twice as fast."""
    length = len(data)
    h = 0x9747B28C ^ length
    words = length >> 2
    if words:
        unpack = _WORDS.get(words)
        if unpack is None:
            unpack = _WORDS[words] = struct.Struct(f"<{words}I").unpack_from
        for k in unpack(data):
            k = (k * _M) & 0xFFFFFFFF
            k ^= k >> 24
            h = ((h * _M) & 0xFFFFFFFF) ^ ((k * _M) & 0xFFFFFFFF)
    extra = length & 3
    if extra:
        tail = length - extra
        if extra == 3:
            h ^= data[tail + 2] << 16
        if extra >= 2:
            h ^= data[tail + 1] << 8
        h = ((h ^ data[tail]) * _M) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * _M) & 0xFFFFFFFF
    return h ^ (h >> 15)
