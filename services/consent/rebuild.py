"""Rebuild the consent projection: replay the consumed topics from offset zero into a new schema.

Usage: `python -m services.consent.rebuild NEW_SCHEMA [--workers N]` with the service's
CONSENT_ environment; then point the service at the new schema (the rebuilt ledger is a fresh
chain; keep the old schema as the record).

A bulk replay, not the live pipeline: it reads every partition from offset zero to the end
offsets seen at start (assigned, no rebalancing) and applies the events with the service's own
functions (`handlers.Unit`, `domain`), holding the states and ledger heads in memory:
- per batch, the inbox is claimed as the live service claims it (duplicates and conflicting
  re-uses of an id are dropped the same way) and the ledger lines are written with COPY; the
  database work of one batch runs while the next one is decoded and applied (two connections);
- the states and heads are written at the end (and whenever more than `max_subjects` states are
  held, so memory stays bounded);
- `--workers N` processes split the partitions by number: a subject is on the same partition
  number in every consumed topic (same key, same partitioner, same partition count; checked);
- the suppression list (erased persons) is copied first and never rebuilt away; their events
  are dropped, as live;
- it publishes nothing (downstream already has the live state) and skips poison (the live
  service dead-lettered it); then it expires what has lapsed, as the live expiry loop has
  done, and commits its own consumer group's offsets at the end offsets.
Not resumable: it refuses a schema that already holds subjects or inbox rows; if a rebuild
fails, drop the schema and run it again.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.consent import store
from services.consent.app import MIGRATIONS, consumed_topics, load_catalogue, tune_gc
from services.consent.domain import SubjectState
from services.consent.handlers import ACCEPTS, Consent, Unit, apply_events, expire_due
from services.consent.ledger import Head, LedgerEntry
from services.consent.settings import ConsentSettings
from shared.plumbing import db
from shared.plumbing.clock import Clock, SystemClock
from shared.plumbing.db import Conn
from shared.plumbing.logging import configure_logging, get_logger
from shared.plumbing.outbox import Outbox, OutboxRow
from shared.plumbing.pipeline import Batch, Delivery, Pipeline, RecordLike

log = get_logger(__name__)

COPY_SUPPRESSED = """
INSERT INTO suppressed (principal, erased_at, request_id, event_id)
SELECT principal, erased_at, request_id, event_id FROM "{source}".suppressed
ON CONFLICT DO NOTHING
"""
SUPPRESSED = "SELECT principal FROM suppressed"
NOT_EMPTY = "SELECT EXISTS (SELECT FROM subjects) OR EXISTS (SELECT FROM inbox)"
FORGET_SALTS = "UPDATE ledger_heads SET salt = NULL WHERE principal = ANY($1)"
SCRUB_LEDGER = "UPDATE ledger SET subject_id = NULL, evidence = NULL WHERE principal = ANY($1)"
WRITE_CHUNK = 5000
GC_EVERY = 50
"""Batches between the replay's own cyclic garbage collections."""
Ends = dict[TopicPartition, int]


class RebuildError(RuntimeError):
    """The rebuild cannot run as asked (a clear message for the operator)."""


def rebuild_group(settings: ConsentSettings, into_schema: str) -> str:
    """The rebuild's own consumer group (its offsets are committed at the end)."""
    return f"{settings.consumer_group}-rebuild-{into_schema}"


async def rebuild(
    settings: ConsentSettings,
    into_schema: str,
    clock: Clock | None = None,
    within_s: float = 600,
    workers: int = 1,
    max_subjects: int = 1_000_000,
) -> int:
    """Replay into `into_schema` (created if needed); returns the number of subjects."""
    clock = clock or SystemClock()
    settings = settings.model_copy(update={"publish": False})  # builds no outbound event
    dsn = settings.database_url.get_secret_value()
    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn, into_schema, MIGRATIONS)
        if await conn.fetchval(NOT_EMPTY):
            raise RebuildError(f"schema {into_schema} is not empty: drop it or name a new one")
        await conn.execute(COPY_SUPPRESSED.format(source=settings.db_schema))
    finally:
        await conn.close()
    ends = await end_offsets(settings)
    if workers > 1 and len({tp.partition for tp in ends}) < workers:
        workers = 1
    if workers > 1:
        check_copartitioned(ends)
        await _in_processes(settings, into_schema, ends, workers, max_subjects, within_s)
    else:
        await asyncio.wait_for(
            replay_partitions(settings, into_schema, ends, clock, max_subjects), within_s
        )
    return await _expire_and_count(settings, into_schema, clock)


async def end_offsets(settings: ConsentSettings) -> Ends:
    """The end offset of every partition of the consumed topics, now."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, **settings.kafka.client_kwargs()
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # every topic's partitions
        partitions = []
        for topic in consumed_topics(settings):
            found = consumer.partitions_for_topic(topic) or set()
            if not found:  # nothing was ever written there: nothing to replay
                log.warning("rebuild_topic_missing", topic=topic)
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


def check_copartitioned(ends: Ends) -> None:
    """Workers split by partition number: every topic must have the same partition count."""
    counts: dict[str, int] = {}
    for tp in ends:
        counts[tp.topic] = counts.get(tp.topic, 0) + 1
    if len(set(counts.values())) > 1:
        raise RebuildError(
            f"--workers needs the same partition count on every consumed topic, found {counts}"
        )


def share(ends: Ends, index: int, workers: int) -> Ends:
    """The partitions worker `index` of `workers` replays."""
    return {tp: end for tp, end in ends.items() if tp.partition % workers == index}


async def _in_processes(
    settings: ConsentSettings,
    into_schema: str,
    ends: Ends,
    workers: int,
    max_subjects: int,
    within_s: float,
) -> None:
    context = multiprocessing.get_context("spawn")
    procs = [
        context.Process(
            target=_worker,
            args=(settings, into_schema, share(ends, i, workers), max_subjects),
            name=f"rebuild-{i}",
        )
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + within_s
    try:
        while any(p.is_alive() for p in procs):
            if time.monotonic() > deadline:
                raise TimeoutError(f"rebuild did not finish within {within_s} s")
            if any(p.exitcode not in (None, 0) for p in procs):
                break
            await asyncio.sleep(0.1)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()
    failed = [p.name for p in procs if p.exitcode != 0]
    if failed:
        raise RebuildError(f"rebuild worker(s) failed: {', '.join(failed)} (see their logs)")


def _worker(settings: ConsentSettings, into_schema: str, ends: Ends, max_subjects: int) -> None:
    configure_logging(settings.log_format, settings.log_level)
    tune_gc()
    asyncio.run(replay_partitions(settings, into_schema, ends, SystemClock(), max_subjects))


async def replay_partitions(
    settings: ConsentSettings, into_schema: str, ends: Ends, clock: Clock, max_subjects: int
) -> int:
    """Replay `ends`' partitions from zero to those offsets; returns the events read."""
    dsn = settings.database_url.get_secret_value()
    pool = await db.create_pool(dsn, into_schema, min_size=2, max_size=2)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=rebuild_group(settings, into_schema),
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
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
                Consent(settings, load_catalogue(settings), clock),
                _pipeline(settings, into_schema, pool),
                claim_conn,
                write_conn,
                max_subjects,
            )
            replay.erased = {r["principal"] for r in await claim_conn.fetch(SUPPRESSED)}
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

    def dead_letter(self, record: RecordLike, reason: str) -> OutboxRow:
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
        accepts=ACCEPTS,
        apply=unused,
        tombstone_topics=frozenset(settings.topics.compacted()),
    )


async def _batches(
    consumer: AIOKafkaConsumer, ends: Ends, size: int
) -> AsyncIterator[list[RecordLike]]:
    """Consumed batches until every partition reached its end offset (the consumer fetches
    ahead in the background, so the next batch is usually waiting)."""
    left = dict(ends)
    while left:
        fetched = await consumer.getmany(*left, timeout_ms=200, max_records=size)
        records: list[RecordLike] = []
        for tp, part in fetched.items():
            end = left.get(tp)
            if end is None:
                continue
            records += [r for r in part if r.offset < end]
            if part and part[-1].offset + 1 >= end:
                del left[tp]
                consumer.pause(tp)
        if records:
            yield records


@dataclass
class Work:
    """What one applied batch writes."""

    entries: list[LedgerEntry]
    erased: list[str]
    suppressed: list[tuple[str, datetime, str | None, str]]


@dataclass
class Replay:
    """States and heads in memory; the inbox and ledger written batch by batch."""

    consent: Consent
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
        # growing) ever more often: ~12% of a worker's CPU. Collected every GC_EVERY batches.
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
        work = self.apply(await claiming)
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
            found = self.principals[subject] = self.consent.principal(subject)
        return found

    def apply(self, fresh: list[Delivery]) -> Work:
        """The live service's decisions for one batch, in memory (export jobs were answered
        live: nothing is published)."""
        batch = Batch(
            events=[d.event for d in fresh],
            outbox=Outbox(),
            _deliveries={d.event.key: d for d in fresh},
            _dead_letter=self.pipeline.dead_letter,
        )
        now = self.consent.clock.now()
        unit = Unit(self.consent, now, batch.outbox, states=self.states, principals=self.principals)
        apply_events(self.consent, unit, batch, self.erased)
        self.dirty |= unit.touched
        self.dirty -= unit.erased.keys()
        self.deleted |= unit.erased.keys()
        entries, new_heads = unit.chain(lambda p: self.heads.get(p) or (Head(), None))
        self.heads.update(new_heads)
        for p in unit.erased.values():  # the head stays, the salt goes
            self.heads[p] = (self.heads.get(p, (Head(), None))[0], None)
        return Work(entries, list(unit.erased.values()), unit.suppressed)

    async def write(self, work: Work) -> None:
        conn = self.write_conn
        async with conn.transaction():
            await store.append_ledger(conn, work.entries)
            if work.erased:
                await conn.execute(SCRUB_LEDGER, work.erased)
            if work.suppressed:
                await store.suppress(conn, work.suppressed)

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
                await conn.execute(FORGET_SALTS, forgotten)
        self.subjects_written += len(states)
        self.dirty.clear()
        self.deleted.clear()
        if len(self.states) > self.max_subjects:
            self.states.clear()
            self.heads.clear()
            self.principals.clear()
            self.spilled = True


async def _expire_and_count(settings: ConsentSettings, into_schema: str, clock: Clock) -> int:
    """Expire what lapsed by now, as the live expiry loop has done; the subject count."""
    consent = Consent(settings, load_catalogue(settings), clock)
    pool = await db.create_pool(
        settings.database_url.get_secret_value(), into_schema, min_size=1, max_size=1
    )
    try:
        async with pool.acquire() as conn:
            while True:
                async with conn.transaction():
                    expired, _ = await expire_due(consent, conn)
                if expired < settings.expiry_batch:
                    break
            count: int = await conn.fetchval("SELECT count(*) FROM subjects")
            return count
    finally:
        await pool.close()


def main() -> None:
    """CLI: rebuild into the named schema."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("schema", help="an empty schema to rebuild into")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds (default 3600)")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes splitting the partitions (default 1)"
    )
    parser.add_argument(
        "--max-subjects",
        type=int,
        default=1_000_000,
        help="states held in memory before they are written out (default 1,000,000)",
    )
    args = parser.parse_args()
    settings = ConsentSettings()  # type: ignore[call-arg]  # required values come from env
    configure_logging(settings.log_format, settings.log_level)
    tune_gc()
    started = time.monotonic()
    try:
        count = asyncio.run(
            rebuild(
                settings,
                args.schema,
                within_s=args.timeout,
                workers=args.workers,
                max_subjects=args.max_subjects,
            )
        )
    except RebuildError as exc:
        parser.exit(2, f"rebuild: {exc}\n")
    took = time.monotonic() - started
    print(f"rebuilt {count} subjects into schema {args.schema} in {took:.1f} s")


if __name__ == "__main__":
    main()
