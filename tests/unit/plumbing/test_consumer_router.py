"""The service subscriber on FastStream's in-memory broker: raw records reach the pipeline."""

from __future__ import annotations

from typing import Any, cast

import pytest
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage, KafkaRouter, TestKafkaBroker

from services.consent import app as consent_app
from services.export import app as export_app
from services.retention import app as retention_app
from shared.contract.topics import Topics
from shared.plumbing.pipeline import Pipeline
from shared.plumbing.service import PIPELINE, batch_subscriber, records_of
from shared.plumbing.settings import ServiceSettings


class RecordingPipeline:
    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    async def process(self, records: Any) -> None:
        self.batches.append(list(records))


def consumer_router(settings: ServiceSettings, topics: list[str]) -> KafkaRouter:
    """A subscriber declared as each service's `app.inbound` declares its own."""
    router = KafkaRouter()

    @batch_subscriber(router, settings, *topics)
    async def consume(_: None, msg: KafkaMessage, pipeline: Pipeline = PIPELINE) -> None:
        await pipeline.process(records_of(msg))

    return router


def settings() -> ServiceSettings:
    return ServiceSettings(
        service_name="unit",
        kafka_bootstrap_servers="localhost:9092",
        database_url="postgresql://u:p@localhost/db",
        db_schema="unit",
        api_token="x" * 16,
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


CONSUMES = {
    consent_app: [
        "accounts.lifecycle",
        "consent.changes",
        "privacy.requests",
        "privacy.policies",  # policy publications, kept, since contract 1.2.0
        "privacy.jobs",
    ],
    retention_app: [
        "accounts.lifecycle",
        "consent.changes",  # restrictions and their lifts (Art. 18), since contract 1.1.0
        "privacy.requests",
        "legal.holds",
        "privacy.receipts",
        "consent.state",
    ],
    export_app: ["privacy.requests", "legal.holds", "privacy.receipts"],
}


@pytest.mark.parametrize("app", list(CONSUMES))
def test_each_service_consumes_its_topics_in_batches_committed_after_processing(app: Any):
    s = settings()
    router = app.inbound(s)
    (subscriber,) = cast(list[Any], router.subscribers)
    assert subscriber.ack_policy is AckPolicy.NACK_ON_ERROR
    assert set(subscriber.topic_names) == {f"c.{topic}" for topic in CONSUMES[app]}
