"""Rebuild the consent projection: replay the consumed topics from offset zero into a new schema.

The suppression list (erased persons) is copied first and is never rebuilt away. The rebuild
publishes nothing (no consent.state, no export parts): downstream already has the live state.
Usage: `python -m services.consent.rebuild NEW_SCHEMA` with the service's CONSENT_ environment;
then point the service at the new schema.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.consent.app import (
    MIGRATIONS,
    build_runtime,
    consumed_topics,
    load_catalogue,
    tune_gc,
)
from services.consent.handlers import Consent, expire_due
from services.consent.settings import ConsentSettings
from shared.plumbing import db
from shared.plumbing.clock import Clock

COPY_SUPPRESSED = """
INSERT INTO suppressed (principal, erased_at, request_id, event_id)
SELECT principal, erased_at, request_id, event_id FROM "{source}".suppressed
ON CONFLICT DO NOTHING
"""


def rebuild_settings(settings: ConsentSettings, into_schema: str) -> ConsentSettings:
    """The same service on `into_schema`, with its own consumer group and nothing published."""
    return ConsentSettings.model_validate(
        {
            **settings.model_dump(),
            "db_schema": into_schema,
            "group_id": f"{settings.consumer_group}-rebuild-{into_schema}",
            "publish": False,
        }
    )


async def rebuild(
    settings: ConsentSettings, into_schema: str, clock: Clock | None = None, within_s: float = 600
) -> int:
    """Replay into `into_schema` (created if needed) until caught up; returns the subject count."""
    target = rebuild_settings(settings, into_schema)
    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        await db.migrate(conn, into_schema, MIGRATIONS)
        await conn.execute(COPY_SUPPRESSED.format(source=settings.db_schema))
    finally:
        await conn.close()
    runtime = build_runtime(target, clock)
    await runtime.start()
    try:
        await wait_caught_up(target, within_s)
        consent = Consent(target, load_catalogue(target), runtime.clock)
        async with runtime.pool.acquire() as pooled:
            while True:  # what lapsed by now is expired, as the live expiry loop has done
                async with pooled.transaction():
                    expired, _ = await expire_due(consent, pooled)
                if expired < target.expiry_batch:
                    break
            count: int = await pooled.fetchval("SELECT count(*) FROM subjects")
    finally:
        await runtime.stop()
    return count


async def wait_caught_up(settings: ConsentSettings, within_s: float) -> None:
    """Until the group's committed offsets reach the end of every consumed partition."""
    security = settings.kafka.client_kwargs()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, **security)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **security)
    await consumer.start()
    await admin.start()
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in consumed_topics(settings)
            for p in sorted(
                consumer.partitions_for_topic(topic) or await _partitions(consumer, topic)
            )
        ]
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            committed = await admin.list_consumer_group_offsets(settings.consumer_group)
            done = {tp: meta.offset for tp, meta in committed.items()}
            if all(done.get(tp, 0) >= end for tp, end in ends.items() if end > 0):
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"rebuild did not catch up within {within_s} s")
    finally:
        await admin.close()
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # metadata for a new topic
    return consumer.partitions_for_topic(topic) or set()


def main() -> None:
    """CLI: rebuild into the named schema."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("schema", help="an empty schema to rebuild into")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    settings = ConsentSettings()  # type: ignore[call-arg]  # required values come from env
    tune_gc()
    count = asyncio.run(rebuild(settings, args.schema, within_s=args.timeout))
    print(f"rebuilt {count} subjects into schema {args.schema}")


if __name__ == "__main__":
    main()
