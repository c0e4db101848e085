"""The outbox relay: publishes the outbox's rows to Kafka, then deletes them.

One relay per service (the holder of an advisory lock) publishes rows in id order, then
deletes them; a crash in between republishes the same events (same ids): consumers dedup.

Fenced (docs/relay-fencing.md): each tenure starts a fresh producer of the service's one
`transactional.id` once it holds the lock; its `init_transactions` fences every earlier one
(their open transaction is aborted, their later commits fail). A batch is one transaction, its
rows deleted after the commit. A tenure reads rows only after its init and while it holds the
lock, so its successor (lock later, then init) commits nothing before anything it committed,
and republishes what is still in the outbox in id order, per key version order: a key's last
committed record is its newest. Readers use read_committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, ProducerFenced
from aiokafka.producer.transaction_manager import TransactionState

from shared.plumbing import metrics
from shared.plumbing.db import Conn, is_database_failure
from shared.plumbing.logging import get_logger
from shared.plumbing.outbox import Message, channel, messages
from shared.plumbing.partitioning import PartitionCache

log = get_logger(__name__)

SELECT_NEXT = "SELECT id, messages FROM outbox ORDER BY id LIMIT $1"
SELECT_ROWS = """
SELECT id, topic, key, value, headers, packed FROM outbox WHERE id = ANY($1::bigint[]) ORDER BY id
"""
DELETE_SENT = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"
DELETE_RANGE = "DELETE FROM outbox WHERE id BETWEEN $1 AND $2"
COUNT_BACKLOG = "SELECT coalesce(sum(messages), 0) FROM outbox"
TRY_LOCK = "SELECT pg_try_advisory_lock(hashtext($1))"
COMMAND_TIMEOUT = 60.0
"""Seconds any statement of the relay may take."""
PRODUCER_TIMEOUT = 30.0
"""Seconds a producer's start (its fencing init), stop or transaction end may take."""


class SteppedDown(Exception):
    """The tenure's producer was fenced or cannot go on: the relay gives up the lead."""


class Relay:
    """Publishes outbox rows while it holds the service's relay lock; others stand by."""

    after_send: Callable[[int], Awaitable[None]] | None = None
    """Test seam: awaited with the batch's message count once Kafka accepted a batch (its
    transaction committed), before its rows are deleted; None in production."""

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
        broker refused; without it the relay keeps `producer` whatever happens.

        A transactional `producer` (fenced publishing) is given unstarted: each tenure starts
        one once it holds the lock and stops it when the tenure ends, so `new_producer` is
        required. Any other `producer` is started (and stopped) by the caller.
        """
        self._fenced = transactional_id(producer) is not None
        if self._fenced and new_producer is None:
            raise ValueError("a transactional relay needs new_producer: one producer per tenure")
        self._unused = self._fenced  # the given transactional producer is not started yet
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
            except SteppedDown as exc:
                metrics.OUTBOX_RELAY_STEPPED_DOWN.labels(self._service).inc()
                log.warning("outbox_relay_stepped_down", service=self._service, reason=str(exc))
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
            if self._fenced and not await self._start_producer(stop):
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
            if self._fenced:
                await self._retire()

    @property
    def producer(self) -> AIOKafkaProducer:
        """The producer in use (another one after a renewal): its owner stops it."""
        return self._producer

    def _beat(self) -> None:
        """The relay is going round (a hung one stops beating: PrivacyPlaneOutboxRelayStalled)."""
        self._heartbeat.set_to_current_time()

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _start_producer(self, stop: asyncio.Event) -> bool:
        """Start the tenure's producer (a fresh one after the first tenure), lock held: its
        `init_transactions` fences every earlier producer of the transactional id. False if
        `stop` came first."""
        assert self._new_producer is not None
        while not stop.is_set():
            if not self._unused:
                self._producer = self._new_producer()
            self._unused = False
            try:
                await asyncio.wait_for(self._producer.start(), PRODUCER_TIMEOUT)
                return True
            except Exception as exc:
                log.warning("outbox_producer_start_failed", error=str(exc)[:200])
                await self._retire()
                self._beat()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        return False

    async def _retire(self) -> None:
        """Stop the tenure's producer for good (an open transaction of it stays uncommitted:
        the next init aborts it, or the broker after its timeout)."""
        self._unused = False
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._producer.stop(), PRODUCER_TIMEOUT)

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
        ids, count = await self._next_rows(conn)
        if not ids:
            metrics.OUTBOX_BACKLOG.labels(self._service).set(0)
            return 0
        batch = messages(await conn.fetch(SELECT_ROWS, ids))
        await self._send_until_accepted(batch)
        if self.after_send is not None:
            await self.after_send(len(batch))
        # Kafka has every message of the batch now (committed): only from here may its rows go
        await delete_sent(conn, ids)
        metrics.OUTBOX_PUBLISHED.labels(self._service).inc(len(batch))
        await self._update_backlog(conn, count)
        return len(batch)

    async def _next_rows(self, conn: asyncpg.Connection) -> tuple[list[int], int]:
        """The ids of the next batch's rows (whole rows, at least one) and their messages."""
        ids, count = [], 0
        for row_id, row_messages in await conn.fetch(SELECT_NEXT, self._batch_size):
            ids.append(row_id)
            count += row_messages
            if count >= self._batch_size:
                break
        return ids, count

    async def _send_until_accepted(self, batch: Sequence[Message]) -> None:
        """Send `batch` until the broker has it all, renewing a producer it refused.

        Fenced: one transaction per attempt; a failed one is aborted and the same rows go again
        in the next. A producer that was fenced, or cannot abort, or was refused a batch, ends
        the tenure (`SteppedDown`): its successor's init (after taking the lock) renews it.
        """
        while True:
            try:
                if self._fenced:
                    await self._transact(batch)
                else:
                    await self._send(batch)
                return
            except Exception as exc:  # broker errors: retry the same rows, never skip
                log.warning("outbox_publish_retry", service=self._service, error=str(exc)[:200])
                self._beat()
                if self._fenced and not await self._abort(exc):
                    raise SteppedDown(f"{type(exc).__name__}: {exc}"[:200]) from exc
                await asyncio.sleep(1.0)
                if refused(exc):
                    await self._renew(exc)

    async def _transact(self, batch: Sequence[Message]) -> None:
        """Send `batch` as one transaction and commit it."""
        producer = self._producer
        await producer.begin_transaction()
        await self._send(batch)
        await asyncio.wait_for(producer.commit_transaction(), PRODUCER_TIMEOUT)

    async def _abort(self, exc: BaseException) -> bool:
        """Abort the failed transaction; whether the producer may go on with this tenure."""
        txn = self._producer._txn_manager
        if txn.is_fatal_error():  # fenced: its transaction's error is retrieved, not logged
            with contextlib.suppress(Exception):
                await txn.wait_for_transaction_end()
            return False
        if txn.state in (TransactionState.IN_TRANSACTION, TransactionState.ABORTABLE_ERROR):
            try:
                await asyncio.wait_for(self._producer.abort_transaction(), PRODUCER_TIMEOUT)
            except Exception:
                return False
        # refused: its sequence numbers are burnt, only a new producer can send again
        fenced_or_refused = isinstance(exc, ProducerFenced) or refused(exc)
        return txn.state is TransactionState.READY and not fenced_or_refused

    async def _update_backlog(self, conn: asyncpg.Connection, count: int) -> None:
        """Refresh the backlog gauge after a full batch, at most every `backlog_every` s."""
        now = time.monotonic()
        if count >= self._batch_size and now - self._backlog_at >= self._backlog_every:
            # the sum scans the whole backlog: refreshed now and then, not after every batch
            self._backlog_at = now
            metrics.OUTBOX_BACKLOG.labels(self._service).set(await conn.fetchval(COUNT_BACKLOG))

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


def transactional_id(producer: AIOKafkaProducer) -> str | None:
    """The producer's transactional id (None: an idempotent producer without transactions)."""
    txn = producer._txn_manager
    return None if txn is None else txn.transactional_id


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
