"""Rebuild the consent projection: replay the consumed topics from offset zero into a new schema.

What the topics still hold: `accounts.lifecycle` and `privacy.policies` are kept, but
`consent.changes` ages out (35 days by default: its evidence is personal data) and requests and
jobs are bounded too. So a rebuild of everything is a restore of a backup followed by the live
service catching up from the positions stored with the data (docs/runbooks/backup-restore.md);
this replay from offset zero rebuilds from what is retained (every event of the kept topics and
the bounded topics' last weeks), e.g. to check a restored schema or after a schema change.

Usage: `python -m services.consent.rebuild NEW_SCHEMA [--workers N]` with the service's
CONSENT_ environment; then point the service at the new schema (the rebuilt ledger is a fresh
chain; keep the old schema as the record).

A bulk replay, not the live pipeline: it reads every partition from offset zero to the end
offsets seen at start (assigned, no rebalancing) and applies the events with the service's own
functions (`handlers.Unit`; see `replay`), holding the states and ledger heads in memory:
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
import multiprocessing
import time

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.consent import store
from services.consent.app import MIGRATIONS, tune_gc
from services.consent.context import Context
from services.consent.handlers import HANDLERS
from services.consent.loops import expire_due
from services.consent.replay import Ends, replay_partitions
from services.consent.settings import ConsentSettings
from shared.plumbing import db, identifiers, migrator
from shared.plumbing.clock import Clock, SystemClock
from shared.plumbing.logging import configure_logging, get_logger

log = get_logger(__name__)


class RebuildError(RuntimeError):
    """The rebuild cannot run as asked (a clear message for the operator)."""


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
    runtime_dsn = settings.database_dsn()
    # As the schema's owner when one is configured: it creates the new schema's tables (and
    # writes the ledger, which the runtime role may only append to), then grants the runtime
    # role, so the service can be pointed at the new schema as it is.
    owner = settings.migrate_database_url or settings.database_url
    settings = settings.model_copy(update={"publish": False, "database_url": owner})
    dsn = settings.database_dsn()  # the owner's URL with the TLS settings in it
    await migrator.migrate_service(dsn, "consent", into_schema, MIGRATIONS, runtime_dsn)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": into_schema})
    try:
        if await conn.fetchval(store.SELECT_NOT_EMPTY):
            raise RebuildError(f"schema {into_schema} is not empty: drop it or name a new one")
        source = identifiers.quoted(settings.db_schema)
        await conn.execute(store.COPY_SUPPRESSED.format(source=source))
    finally:
        await conn.close()
    ends = await end_offsets(settings)
    policies, ends = split_policies(settings, ends)
    if policies:  # first: the policy versions decisions may depend on are in place
        await asyncio.wait_for(
            replay_partitions(settings, into_schema, policies, clock, max_subjects), within_s
        )
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
        bootstrap_servers=settings.kafka_bootstrap_servers,
        # the last stable offsets: what the replay's read_committed consumer can reach
        isolation_level="read_committed",
        **settings.kafka.client_kwargs(),
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # every topic's partitions
        partitions = []
        for topic in settings.topics.for_types(HANDLERS.accepts):
            found = consumer.partitions_for_topic(topic) or set()
            if not found:  # nothing was ever written there: nothing to replay
                log.warning("rebuild_topic_missing", topic=topic)
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


def split_policies(settings: ConsentSettings, ends: Ends) -> tuple[Ends, Ends]:
    """The policy topic's partitions (replayed first, on their own) and the others."""
    topic = settings.topics.privacy_policies
    first = {tp: end for tp, end in ends.items() if tp.topic == topic}
    return first, {tp: end for tp, end in ends.items() if tp.topic != topic}


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


async def _expire_and_count(settings: ConsentSettings, into_schema: str, clock: Clock) -> int:
    """Expire what lapsed by now, as the live expiry loop has done; the subject count."""
    consent = Context.from_settings(settings, clock)
    pool = await db.create_pool(settings.database_dsn(), into_schema, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            while True:
                async with conn.transaction():
                    expired, _ = await expire_due(consent, conn)
                if expired < settings.expiry_batch:
                    break
            count: int = await conn.fetchval(store.COUNT_SUBJECTS)
            return count
    finally:
        await pool.close()


def _schema_name(value: str) -> str:
    try:
        return identifiers.checked(value)
    except identifiers.InvalidIdentifier as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def main() -> None:
    """CLI: rebuild into the named schema."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "schema", type=_schema_name, help="an empty schema to rebuild into (a new name)"
    )
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
