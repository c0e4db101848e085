"""The rebuild's replay: partitions from offset zero applied in memory, written in bulk.

The live decoding, inbox claim and decisions (`handlers.Unit`), with the states and ledger heads
held in memory: per batch the inbox is claimed and the ledger lines are written with COPY while
the next batch is decoded and applied (two connections); the states and heads are written at the
end, and whenever more than `max_subjects` states are held, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.consent import store
from services.consent.context import Context
from services.consent.handlers import HANDLERS, Unit, name
from services.consent.ledger import Head, LedgerEntry
from services.consent.settings import ConsentSettings
from services.consent.state import SubjectState
from shared.contract.events import PolicyPublished
from shared.plumbing import db
from shared.plumbing.clock import Clock
from shared.plumbing.db import Conn
from shared.plumbing.deadletters import DeadLetterKind
from shared.plumbing.logging import get_logger
from shared.plumbing.outbox import Outbox, OutboxRow
from shared.plumbing.pipeline import Batch, Delivery, Pipeline, RecordLike

log = get_logger(__name__)

WRITE_CHUNK = 5000
GC_EVERY = 50
"""Batches between the replay's own cyclic garbage collections."""
Ends = dict[TopicPartition, int]
"""The end offset to replay up to, per partition."""


def rebuild_group(settings: ConsentSettings, into_schema: str) -> str:
    """The rebuild's own consumer group (its offsets are committed at the end)."""
    return f"{settings.consumer_group}-rebuild-{into_schema}"


async def replay_partitions(
    settings: ConsentSettings, into_schema: str, ends: Ends, clock: Clock, max_subjects: int
) -> int:
    """Replay `ends`' partitions from zero to those offsets; returns the events read."""
    dsn = settings.database_dsn()
    pool = await db.create_pool(dsn, into_schema, min_size=2, max_size=2)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=rebuild_group(settings, into_schema),
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        isolation_level="read_committed",  # as the live subscriber reads (relay transactions)
        **settings.kafka.client_kwargs(),
    )
    await consumer.start()
    try:
        wanted = {tp: end for tp, end in ends.items() if end > 0}
        consumer.assign(list(wanted))
        if wanted:
            await consumer.seek_to_beginning(*wanted)
        async with pool.acquire() as claim_conn, pool.acquire() as write_conn:
            replay = Replay(
                Context.from_settings(settings, clock),
                _pipeline(settings, into_schema, pool),
                claim_conn,
                write_conn,
                max_subjects,
            )
            replay.erased = {
                r["principal"] for r in await claim_conn.fetch(store.SELECT_SUPPRESSED)
            }
            batches = _batches(consumer, wanted, settings.batch_max_records)
            read = await replay.run(batches)
        if wanted:
            await consumer.commit(dict(wanted))
        log.info("rebuild_partitions_done", events=read, subjects=replay.subjects_written)
        return read
    finally:
        await consumer.stop()
        await pool.close()


class _ReplayPipeline(Pipeline):
    """The live decoding and inbox claim; what the live service dead-lettered is only skipped."""

    def dead_letter(self, record: RecordLike, reason: str, kind: DeadLetterKind) -> OutboxRow:
        log.info("rebuild_skipped", topic=record.topic, offset=record.offset, reason=reason[:200])
        return OutboxRow(self.deadletter_topic, None, None)


def _pipeline(settings: ConsentSettings, schema: str, pool: asyncpg.Pool) -> Pipeline:
    async def unused(*_: object) -> None:
        raise AssertionError("the rebuild applies in memory")

    return _ReplayPipeline(
        service=f"{settings.service_name}-rebuild",
        schema=schema,
        pool=pool,
        deadletter_topic=settings.topics.deadletter,
        accepts=HANDLERS.accepts,
        apply=unused,
        tombstone_topics=frozenset(settings.topics.compacted()),
        max_event_bytes=settings.max_event_bytes,  # skip exactly what the live service refused
    )


async def _batches(
    consumer: AIOKafkaConsumer, ends: Ends, size: int
) -> AsyncIterator[list[RecordLike]]:
    """Consumed batches until every partition reached its end offset (the consumer fetches
    ahead in the background, so the next batch is usually waiting).

    Reached means the consumer's position, not the last record's offset: a transaction's
    commit marker takes an offset of its own, so a relay's topic often ends with no record.
    """
    left = dict(ends)
    while left:
        fetched = await consumer.getmany(*left, timeout_ms=200, max_records=size)
        records: list[RecordLike] = []
        for tp, part in fetched.items():
            end = left.get(tp)
            if end is not None:
                records += [r for r in part if r.offset < end]
        for tp, end in list(left.items()):
            if await consumer.position(tp) >= end:
                del left[tp]
                consumer.pause(tp)
        if records:
            yield records


@dataclass
class Work:
    """What one applied batch writes."""

    entries: list[LedgerEntry]
    erased: list[str]
    suppressed: list[store.Suppression]
    policies: list[PolicyPublished] = field(default_factory=list)


@dataclass
class Replay:
    """States and heads in memory; the inbox and ledger written batch by batch."""

    consent: Context
    pipeline: Pipeline
    claim_conn: Conn
    write_conn: Conn
    max_subjects: int
    states: dict[str, SubjectState] = field(default_factory=dict)
    heads: dict[str, tuple[Head, bytes | None]] = field(default_factory=dict)
    principals: dict[str, str] = field(default_factory=dict)
    erased: set[str] = field(default_factory=set)
    dirty: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    spilled: bool = False
    subjects_written: int = 0
    applied: int = 0

    async def run(self, batches: AsyncIterator[list[RecordLike]]) -> int:
        """Claim batch n+1 and write batch n while applying; returns the events read."""
        read = 0
        claiming: asyncio.Task[list[Delivery]] | None = None
        writing: asyncio.Task[None] | None = None
        # The automatic cyclic GC rescans what the replay holds (every state and head, only
        # growing) ever more often; collected every GC_EVERY batches instead.
        collecting = gc.isenabled()
        gc.disable()
        try:
            async for records in batches:
                read += len(records)
                deliveries = self.pipeline.decode_batch(records)[0]
                if claiming is not None:
                    writing = await self._apply_claimed(claiming, writing)
                claiming = asyncio.create_task(self.claim(deliveries))
            if claiming is not None:
                writing = await self._apply_claimed(claiming, writing)
            if writing is not None:
                await writing
            await self.spill()
            return read
        finally:
            if collecting:
                gc.enable()
            for task in (claiming, writing):
                if task is not None and not task.done():
                    task.cancel()

    async def _apply_claimed(
        self, claiming: asyncio.Task[list[Delivery]], writing: asyncio.Task[None] | None
    ) -> asyncio.Task[None]:
        work = await self.apply(await claiming)
        self.applied += 1
        if self.applied % GC_EVERY == 0:
            gc.collect()  # reference cycles made since the last round
            gc.freeze()  # what survives (states, heads) is not scanned again
        if writing is not None:
            await writing
        writing = asyncio.create_task(self.write(work))
        if len(self.states) > self.max_subjects:
            await writing
            await self.spill()
        return writing

    async def claim(self, deliveries: list[Delivery]) -> list[Delivery]:
        fresh = await self.pipeline.claim(self.claim_conn, deliveries, Outbox())
        if self.spilled:  # states written out earlier come back from the database
            subjects = sorted({d.event.subject for d in fresh} - self.states.keys())
            principals = [self.principal(s) for s in subjects]
            states, contexts = await store.load_batch(self.claim_conn, subjects, principals)
            self.states.update(states)
            for p, context in contexts.items():
                self.heads.setdefault(p, (context.head, context.salt))
        return fresh

    def principal(self, subject: str) -> str:
        found = self.principals.get(subject)
        if found is None:
            found = self.principals[subject] = name(self.consent, subject, self.erased)
        return found

    async def apply(self, fresh: list[Delivery]) -> Work:
        """The live service's decisions for one batch, in memory (export jobs were answered
        live: nothing is published)."""
        batch = Batch(
            events=[d.event for d in fresh],
            outbox=Outbox(),
            _deliveries={d.event.key: d for d in fresh},
            _dead_letter=self.pipeline.rejection,
        )
        now = self.consent.clock.now()
        unit = Unit(
            self.consent,
            now,
            batch.outbox,
            batch=batch,
            states=self.states,
            principals=self.principals,
            gone=self.erased,
        )
        await HANDLERS.dispatch(self.consent, unit, batch)
        self.dirty |= unit.touched
        self.dirty -= unit.erased.keys()
        self.deleted |= unit.erased.keys()
        entries, new_heads = unit.chain(lambda p: self.heads.get(p) or (Head(), None))
        self.heads.update(new_heads)
        for p in unit.erased.values():  # the head stays, the salt goes
            self.heads[p] = (self.heads.get(p, (Head(), None))[0], None)
        return Work(entries, list(unit.erased.values()), unit.suppressed, unit.policies)

    async def write(self, work: Work) -> None:
        conn = self.write_conn
        async with conn.transaction():
            await store.append_ledger(conn, work.entries)
            if work.erased:
                await conn.execute(store.SCRUB_LEDGER, work.erased)
            if work.suppressed:
                await store.suppress(conn, work.suppressed)
            for policy in work.policies:  # kept on privacy.policies, replayed first
                await store.record_policy(conn, policy)

    async def spill(self) -> None:
        """Write the changed states and every head; then forget them (memory stays bounded)."""
        conn = self.write_conn
        now = self.consent.clock.now()
        states = [self.states[s] for s in sorted(self.dirty)]
        heads = sorted(self.heads.items())
        async with conn.transaction():
            for i in range(0, len(states), WRITE_CHUNK):
                await store.save_states(conn, states[i : i + WRITE_CHUNK], now)
            await store.delete_states(conn, sorted(self.deleted))
            for i in range(0, len(heads), WRITE_CHUNK):
                chunk = heads[i : i + WRITE_CHUNK]
                await store.save_heads(conn, {p: (h, salt or b"") for p, (h, salt) in chunk})
            forgotten = [p for p, (_, salt) in heads if salt is None]  # erased persons
            if forgotten:
                await conn.execute(store.FORGET_SALTS, forgotten)
        self.subjects_written += len(states)
        self.dirty.clear()
        self.deleted.clear()
        if len(self.states) > self.max_subjects:
            self.states.clear()
            self.heads.clear()
            self.principals.clear()
            self.spilled = True
