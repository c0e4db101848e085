"""The service subscriber on FastStream's in-memory broker: raw records reach the pipeline."""

from __future__ import annotations

from typing import Any, cast

from faststream import AckPolicy
from faststream.kafka import KafkaBroker, TestKafkaBroker

from shared.contract.topics import Topics
from shared.plumbing.service import consumer_router
from shared.plumbing.settings import ServiceSettings


class RecordingPipeline:
    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    async def process(self, records: Any) -> None:
        self.batches.append(list(records))


def settings() -> ServiceSettings:
    return ServiceSettings(
        service_name="unit",
        kafka_bootstrap_servers="localhost:9092",
        database_url="postgresql://u:p@localhost/db",
        db_schema="unit",
        api_token="x",
        topics=Topics().with_prefix("c."),
    )


async def test_batches_of_raw_records_reach_the_pipeline_undecoded():
    s = settings()
    broker = KafkaBroker()
    broker.include_router(consumer_router(s, [s.topics.consent_changes]))
    pipeline = RecordingPipeline()
    broker.context.set_global("pipeline", pipeline)
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish_batch(b"\xff not json", b"{}", topic=s.topics.consent_changes)
    records = [r for batch in pipeline.batches for r in batch]
    assert [r.value for r in records] == [b"\xff not json", b"{}"]
    assert {r.topic for r in records} == {"c.consent.changes"}


def test_the_subscriber_commits_only_after_processing_in_its_own_group():
    s = settings()
    router = consumer_router(s, [s.topics.consent_changes, s.topics.accounts_lifecycle])
    (subscriber,) = cast(list[Any], router.subscribers)
    assert subscriber.ack_policy is AckPolicy.NACK_ON_ERROR
    assert subscriber.group_id == "privacy-plane-unit"
    assert set(subscriber.topic_names) == {"c.consent.changes", "c.accounts.lifecycle"}
