"""The consent client against a real compacted consent.state topic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaRouter
from prometheus_client import REGISTRY

from shared.consent_client import ConsentClient, ConsentFilter
from shared.contract.events import ConsentState
from shared.contract.topics import Topics
from tests.support import events as make
from tests.support.infra import Infra
from tests.support.kafka import produce

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def state(subject: str, version: int, **allowed: bool) -> ConsentState:
    return make.consent_state(subject, version, at=NOW, **allowed)


def tombstone(subject: str) -> tuple[bytes, None]:
    return subject.encode(), None


async def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_client_builds_the_cache_from_the_topic_and_follows_changes(
    infra: Infra, topics: Topics
) -> None:
    await produce(
        infra.kafka,
        topics.consent_state,
        [
            state("usr_a", 1, marketing_email=True),
            state("usr_a", 2, marketing_email=False),
            state("usr_b", 3, marketing_email=True),
            state("usr_b", 2, marketing_email=False),  # older, arriving later: dropped
            state("usr_c", 1, marketing_email=True),
            tombstone("usr_c"),
        ],
    )
    client = ConsentClient(infra.kafka, topics.consent_state)
    await client.start()
    try:
        async with asyncio.timeout(30):
            await client.wait_until_caught_up()
        assert client.caught_up
        assert not client.may_process("usr_a", "marketing_email")
        assert client.may_process("usr_b", "marketing_email")
        assert not client.may_process("usr_c", "marketing_email")
        assert "usr_c" not in client.cache
        assert client.may_process("usr_unknown", "transactional_email")
        assert not client.may_process("usr_unknown", "marketing_email")

        # Live changes after start: a new subject, then an erasure.
        await produce(infra.kafka, topics.consent_state, [state("usr_d", 1, personalisation=True)])
        await eventually(lambda: client.may_process("usr_d", "personalisation"))
        await produce(infra.kafka, topics.consent_state, [tombstone("usr_b")])
        await eventually(lambda: not client.may_process("usr_b", "marketing_email"))
    finally:
        await client.stop()


async def test_client_on_an_empty_topic_is_caught_up_at_once(infra: Infra, topics: Topics) -> None:
    async with ConsentClient(infra.kafka, topics.consent_state) as client:
        async with asyncio.timeout(10):
            await client.wait_until_caught_up()
        assert len(client.cache) == 0


async def test_client_refuses_a_topic_that_does_not_exist(infra: Infra, topics: Topics) -> None:
    client = ConsentClient(infra.kafka, topics.consent_state + ".missing")
    with pytest.raises(LookupError):
        await client.start()


async def test_filter_on_a_real_subscriber_drops_subjects_without_consent(
    infra: Infra, topics: Topics, test_id: str
) -> None:
    await produce(
        infra.kafka,
        topics.consent_state,
        [state("usr_ok", 1, marketing_email=True), state("usr_no", 1, marketing_email=False)],
    )
    client = ConsentClient(infra.kafka, topics.consent_state)
    await client.start()
    seen: list[dict[str, Any]] = []
    broker = KafkaBroker(infra.kafka)
    router = KafkaRouter(middlewares=[ConsentFilter(client, "marketing_email")])
    downstream = topics.privacy_jobs  # any topic of this test stands in for a downstream one

    @router.subscriber(
        downstream,
        group_id=f"mailer-{test_id}",
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )
    async def send_newsletter(body: dict[str, Any]) -> None:
        seen.append(body)

    broker.include_router(router)
    labels = {"purpose": "marketing_email", "reason": "not_allowed"}
    before = REGISTRY.get_sample_value("pp_consent_filter_dropped_total", labels) or 0.0
    try:
        await broker.start()
        await produce(
            infra.kafka,
            downstream,
            [
                (b"usr_no", b'{"to": "usr_no"}'),
                (b"usr_ok", b'{"to": "usr_ok"}'),
                (b"usr_stranger", b'{"to": "usr_stranger"}'),
            ],
        )

        def dropped() -> float:
            return (
                REGISTRY.get_sample_value("pp_consent_filter_dropped_total", labels) or 0.0
            ) - before

        await eventually(lambda: bool(seen) and dropped() == 2, timeout=30)
        assert seen == [{"to": "usr_ok"}]
    finally:
        await broker.stop()
        await client.stop()
