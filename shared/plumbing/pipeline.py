"""The consuming side of every service: decode, dedup, apply, outbox, commit — in one transaction.

A consumed batch becomes one database transaction holding the inbox rows, the projection
changes and the outbox rows (dead letters included). FastStream commits the offsets only after
`process` returns, so a crash anywhere replays and the inbox turns the replay into a no-op.
Poison never stops the service: it is dead-lettered (through the outbox) with its reason, once
per record however often its batch is replayed (`shared.plumbing.deadletters`).
Transient failures (database down) are retried with backoff and never dead-lettered.
"""

from __future__ import annotations

import gc
import hashlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from shared.contract.codec import PARTITIONKEY, DecodeError, canonical, decode_kafka
from shared.contract.envelope import MAX_EVENT_BYTES
from shared.contract.events import AnyEvent
from shared.plumbing import deadletters, metrics, outbox, positions
from shared.plumbing.db import Conn, is_transient
from shared.plumbing.deadletters import DeadLetter, DeadLetterKind
from shared.plumbing.deadletters import RecordLike as RecordLike
from shared.plumbing.logging import get_logger
from shared.plumbing.outbox import Outbox, OutboxRow
from shared.plumbing.positions import Positions

log = get_logger(__name__)

CLAIM = """
INSERT INTO inbox (source, event_id, digest, event_type)
SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[])
ON CONFLICT DO NOTHING
RETURNING source, event_id
"""
SEEN_DIGESTS = """
SELECT i.source, i.event_id, i.digest FROM inbox i
JOIN unnest($1::text[], $2::text[]) AS k(source, event_id)
  ON i.source = k.source AND i.event_id = k.event_id
"""
CONFLICT = "conflict: same source and id, other content"
KEY_MISMATCH = "Kafka key must equal the event's subject"


class CollectorPause:
    """Pauses Python's cyclic garbage collector while batches are processed.

    What a batch allocates stays alive until the batch is done, so a collection during one
    frees nothing. The collector resumes when no batch is in flight; if batches keep
    overlapping, generation 0 is collected at a batch's end once `limit` objects wait.
    """

    def __init__(self, limit: int = 1_000_000) -> None:
        self.limit = limit
        self.in_flight = 0
        self.paused = False

    def __enter__(self) -> None:
        if self.in_flight == 0 and gc.isenabled():
            gc.disable()
            self.paused = True
        self.in_flight += 1

    def __exit__(self, *_: object) -> None:
        self.in_flight -= 1
        if not self.paused:
            return
        if self.in_flight == 0:
            self.paused = False
            gc.enable()
        elif gc.get_count()[0] > self.limit:
            gc.collect(0)


COLLECTOR = CollectorPause()


@dataclass(frozen=True)
class Delivery:
    record: RecordLike
    event: AnyEvent
    digest: bytes


@dataclass
class Batch:
    """The new events of one consumed batch and what applying them will publish."""

    events: list[AnyEvent]
    outbox: Outbox
    _deliveries: dict[str, Delivery]
    _dead_letter: Callable[[RecordLike, str], OutboxRow]
    rejected: set[str] = field(default_factory=set)
    suppressed: int = 0

    def reject(self, event: AnyEvent, reason: str) -> None:
        """Dead-letter `event` for a contract rule (call before writing anything for it)."""
        self.rejected.add(event.key)
        self.outbox.dead_letter(self._dead_letter(self._deliveries[event.key].record, reason))

    def suppress(self, event: AnyEvent) -> None:
        """Drop `event` because its subject was erased (counted, not dead-lettered)."""
        self.suppressed += 1


ApplyFn = Callable[[Conn, Batch], Awaitable[None]]


def event_of(record: RecordLike, max_bytes: int = MAX_EVENT_BYTES) -> AnyEvent:
    """The one place a consumed record becomes a contract event (raises DecodeError).

    Either CloudEvents content mode: structured (the envelope is the value) or binary
    (attributes in `ce_*` headers, the data as the value); over `max_bytes`, `too_large`.
    """
    return decode_kafka(record.value, record.headers, max_bytes)


def keyed_right(record: RecordLike, event: AnyEvent) -> bool:
    """Whether the record's key is the event's subject, the contract's partitioning rule.

    A record without a key is accepted when its `partitionkey` extension (what the SDKs key by
    when no key mapper is given) is absent or the subject: the subject still says whose it is,
    though ordering across partitions is then lost (docs/integrating.md).
    """
    if record.key is None:
        partitionkey = (event.model_extra or {}).get(PARTITIONKEY)
        return partitionkey is None or partitionkey == event.subject
    return record.key.decode("utf-8", "replace") == event.subject


class Pipeline:
    """Processes consumed Kafka records for one service."""

    def __init__(
        self,
        *,
        service: str,
        schema: str,
        pool: asyncpg.Pool,
        deadletter_topic: str,
        accepts: AbstractSet[str],
        apply: ApplyFn,
        tombstone_topics: frozenset[str] = frozenset(),
        retry_for: float = 60.0,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        self.service = service
        self.schema = schema
        self.pool = pool
        self.deadletter_topic = deadletter_topic
        self.accepts = accepts
        self.apply = apply
        self.tombstone_topics = tombstone_topics
        self.retry_for = retry_for
        self.max_event_bytes = max_event_bytes

    async def process(self, records: Sequence[RecordLike]) -> None:
        """Process one batch; returns only when it is committed (then offsets may commit)."""
        started = time.perf_counter()
        with COLLECTOR:  # resumes once the batch's objects are gone with `_process`'s frame
            await self._process(records)
        metrics.BATCH_SECONDS.labels(self.service).observe(time.perf_counter() - started)

    async def _process(self, records: Sequence[RecordLike]) -> None:
        deliveries, poison = self.decode_batch(records)
        consumed = positions.next_offsets(records)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential_jitter(multiplier=0.1, max=5.0),
            stop=stop_after_delay(self.retry_for),
            before_sleep=self._before_retry,
            reraise=True,
        ):
            with attempt:
                await self._commit(deliveries, poison, consumed)

    def _before_retry(self, state: Any) -> None:
        metrics.TRANSIENT_RETRIES.labels(self.service).inc()
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "transient_failure_retrying", error=str(error)[:200], attempt=state.attempt_number
        )

    def decode_batch(self, records: Sequence[RecordLike]) -> tuple[list[Delivery], list[OutboxRow]]:
        deliveries: list[Delivery] = []
        poison: list[OutboxRow] = []
        for topic, count in Counter(record.topic for record in records).items():
            metrics.EVENTS_CONSUMED.labels(self.service, topic).inc(count)
        for record in records:
            if record.value is None and record.topic in self.tombstone_topics:
                metrics.EVENTS_IGNORED.labels(self.service, "tombstone").inc()
                continue  # a compacted topic's deletion marker, not an event
            try:
                event = event_of(record, self.max_event_bytes)
            except DecodeError as exc:
                poison.append(self.dead_letter(record, exc.reason, DeadLetterKind(exc.kind)))
                continue
            if event.type not in self.accepts:
                metrics.EVENTS_IGNORED.labels(self.service, metrics.type_label(event.type)).inc()
                continue
            if not keyed_right(record, event):
                poison.append(self.dead_letter(record, KEY_MISMATCH, DeadLetterKind.KEY_MISMATCH))
                continue
            digest = hashlib.sha256(canonical(event)).digest()
            deliveries.append(Delivery(record, event, digest))
        return deliveries, poison

    def dead_letter(self, record: RecordLike, reason: str, kind: DeadLetterKind) -> OutboxRow:
        """An outbox row carrying `record`'s original bytes to the dead-letter topic."""
        return deadletters.letter(
            record, reason, kind, topic=self.deadletter_topic, service=self.service
        )

    def rejection(self, record: RecordLike, reason: str) -> OutboxRow:
        """The dead letter of an event a contract rule refuses (`Batch.reject`)."""
        return self.dead_letter(record, reason, DeadLetterKind.FORBIDDEN)

    async def _commit(
        self, deliveries: list[Delivery], poison: list[OutboxRow], consumed: Positions
    ) -> None:
        try:
            await self._commit_together(deliveries, poison, consumed)
        except Exception as exc:
            if is_transient(exc) or len(deliveries) <= 1:
                if is_transient(exc) or not deliveries:
                    raise
                await self._commit_dead_letter(deliveries[0], exc, poison)
                await self._commit_together([], [], consumed)
                return
            # One event broke the batch: isolate it, so only that one is dead-lettered.
            log.warning("batch_failed_isolating", size=len(deliveries), error=str(exc)[:200])
            await self._commit_together([], poison)
            for delivery in deliveries:
                try:
                    await self._commit_together([delivery], [])
                except Exception as single:
                    if is_transient(single):
                        raise
                    await self._commit_dead_letter(delivery, single, [])
            # The positions last: a crash before them replays, never skips, the batch.
            await self._commit_together([], [], consumed)

    async def _commit_dead_letter(
        self, delivery: Delivery, exc: Exception, poison: list[OutboxRow]
    ) -> None:
        reason = f"handler error: {type(exc).__name__}: {exc}"
        log.error(
            "handler_error",
            event_id=delivery.event.id,
            type=delivery.event.type,
            error=reason[:300],
        )
        out = _outbox(poison)
        out.dead_letter(self.dead_letter(delivery.record, reason, DeadLetterKind.HANDLER_ERROR))
        async with self.pool.acquire() as conn, conn.transaction():
            written = await self._write(conn, out)
        self._dead_lettered(written)

    async def _commit_together(
        self,
        deliveries: list[Delivery],
        poison: list[OutboxRow],
        consumed: Positions = positions.NONE,
    ) -> None:
        """Inbox, projection, outbox and the consumed positions in one transaction (so that a
        restored database replays from its own positions, `shared.plumbing.positions`)."""
        out = _outbox(poison)
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = await self.claim(conn, deliveries, out)
            if fresh:
                batch = Batch(
                    events=[d.event for d in fresh],
                    outbox=out,
                    _deliveries={d.event.key: d for d in fresh},
                    _dead_letter=self.rejection,
                )
                await self.apply(conn, batch)
                if batch.suppressed:
                    metrics.EVENTS_SUPPRESSED.labels(self.service).inc(batch.suppressed)
                processed = Counter(e.type for e in batch.events if e.key not in batch.rejected)
                for event_type, count in processed.items():
                    metrics.EVENTS_PROCESSED.labels(self.service, event_type).inc(count)
            written = await self._write(conn, out)
            await positions.store(conn, consumed)
        self._dead_lettered(written)

    async def _write(self, conn: Conn, out: Outbox) -> list[DeadLetter]:
        """The outbox rows, leaving out dead letters of records dead-lettered before (a replay);
        returns the dead letters written."""
        rows, written = out.rows, list[DeadLetter]()
        if out.dead_letters:  # the one extra statement, only when there are dead letters
            rows, written = await deadletters.keep_new(conn, out.rows, out.dead_letters)
        await outbox.write(conn, rows, self.schema)
        return written

    def _dead_lettered(self, letters: list[DeadLetter]) -> None:
        """Count and log dead letters once their transaction committed."""
        for row in letters:
            metrics.EVENTS_DEADLETTERED.labels(self.service, row.kind.value).inc()
            topic, partition, offset = row.origin
            log.warning(
                "dead_lettered",
                topic=topic,
                partition=partition,
                offset=offset,
                kind=row.kind.value,
                reason=row.headers["error"][:300],
            )

    async def claim(self, conn: Conn, deliveries: list[Delivery], out: Outbox) -> list[Delivery]:
        """Record the batch in the inbox; returns the deliveries seen for the first time."""
        unique: dict[tuple[str, str], Delivery] = {}
        for d in deliveries:
            pair = (d.event.source, d.event.id)
            first = unique.get(pair)
            if first is None:
                unique[pair] = d
            elif first.digest != d.digest:
                out.dead_letter(self.dead_letter(d.record, CONFLICT, DeadLetterKind.CONFLICT))
            else:
                metrics.EVENTS_DUPLICATE.labels(self.service, d.event.type).inc()
        if not unique:
            return []
        items = list(unique.values())
        claimed = {
            (r["source"], r["event_id"])
            for r in await conn.fetch(
                CLAIM,
                [d.event.source for d in items],
                [d.event.id for d in items],
                [d.digest for d in items],
                [d.event.type for d in items],
            )
        }
        seen = [d for d in items if (d.event.source, d.event.id) not in claimed]
        if seen:
            digests = {
                (r["source"], r["event_id"]): bytes(r["digest"])
                for r in await conn.fetch(
                    SEEN_DIGESTS, [d.event.source for d in seen], [d.event.id for d in seen]
                )
            }
            for d in seen:
                if digests.get((d.event.source, d.event.id)) == d.digest:
                    metrics.EVENTS_DUPLICATE.labels(self.service, d.event.type).inc()
                else:
                    out.dead_letter(self.dead_letter(d.record, CONFLICT, DeadLetterKind.CONFLICT))
        return [d for d in items if (d.event.source, d.event.id) in claimed]


def _outbox(poison: list[OutboxRow]) -> Outbox:
    """A transaction's outbox, starting with the dead letters of the batch's poison records."""
    return Outbox(rows=list(poison), dead_letters=list(poison))
