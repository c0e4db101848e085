"""The transactional outbox and its relay.

Rows are written in the transaction that causes them; one relay per service (the holder of an
advisory lock) publishes them in id order with an idempotent producer and then deletes them.
A crash between publish and delete republishes the same events (same ids): consumers dedup.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from shared.contract.codec import encode
from shared.contract.envelope import CloudEvent
from shared.plumbing import metrics
from shared.plumbing.db import Conn
from shared.plumbing.logging import get_logger

log = get_logger(__name__)

INSERT_ROWS = """
WITH inserted AS (
    INSERT INTO outbox (topic, key, value, headers, event_id)
    SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::jsonb[], $5::text[])
)
SELECT pg_notify($6, '')
"""
SELECT_BATCH = "SELECT id, topic, key, value, headers FROM outbox ORDER BY id LIMIT $1"
DELETE_SENT = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"
COUNT_BACKLOG = "SELECT count(*) FROM outbox"
TRY_LOCK = "SELECT pg_try_advisory_lock(hashtext($1))"


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
    await conn.execute(
        INSERT_ROWS,
        [r.topic for r in rows],
        [r.key for r in rows],
        [r.value for r in rows],
        [orjson.dumps(r.headers).decode() for r in rows],
        [r.event_id for r in rows],
        channel(schema),
    )


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
    ) -> None:
        self._dsn = dsn
        self._schema = schema
        self._producer = producer
        self._service = service
        self._batch_size = batch_size
        self._idle_wait = idle_wait
        self._backlog_every = backlog_every
        self._backlog_at = 0.0
        self._wake = asyncio.Event()
        self.leader = False

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set, reconnecting after failures; drains before returning."""
        while not stop.is_set():
            try:
                await self._lead(stop)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.leader = False
                log.warning("outbox_relay_db_error", service=self._service, error=str(exc)[:200])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    async def _lead(self, stop: asyncio.Event) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn, server_settings={"search_path": self._schema}
        )
        try:
            while not await conn.fetchval(TRY_LOCK, f"relay:{self._schema}"):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
                if stop.is_set():
                    return
            self.leader = True
            log.info("outbox_relay_leading", service=self._service)
            await conn.add_listener(channel(self._schema), self._on_notify)
            while not stop.is_set():
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

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def publish_batch(self, conn: asyncpg.Connection) -> int:
        """Publish up to one batch in id order; returns how many were sent."""
        rows = await conn.fetch(SELECT_BATCH, self._batch_size)
        if not rows:
            metrics.OUTBOX_BACKLOG.labels(self._service).set(0)
            return 0
        while True:
            try:
                futures = [
                    await self._producer.send(
                        r["topic"],
                        value=r["value"],
                        key=r["key"],
                        headers=[
                            (k, str(v).encode()) for k, v in orjson.loads(r["headers"]).items()
                        ],
                    )
                    for r in rows
                ]
                await asyncio.gather(*futures)
                break
            except Exception as exc:  # broker errors: retry the same rows, never skip
                log.warning("outbox_publish_retry", service=self._service, error=str(exc)[:200])
                await asyncio.sleep(1.0)
        await conn.execute(DELETE_SENT, [r["id"] for r in rows])
        metrics.OUTBOX_PUBLISHED.labels(self._service).inc(len(rows))
        now = time.monotonic()
        if len(rows) == self._batch_size and now - self._backlog_at >= self._backlog_every:
            # count(*) scans the whole backlog: refreshed now and then, not after every batch
            self._backlog_at = now
            metrics.OUTBOX_BACKLOG.labels(self._service).set(await conn.fetchval(COUNT_BACKLOG))
        return len(rows)
