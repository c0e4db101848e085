"""ConsentFilter on FastStream's test broker; the client's record handling without Kafka."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaRouter, TestKafkaBroker
from prometheus_client import REGISTRY

from shared.consent_client import ConsentCache, ConsentClient, ConsentFilter
from shared.contract.codec import encode
from shared.contract.events import (
    ConsentState,
)
from tests.support import events as make

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def consent_state(subject: str, version: int, **allowed: bool) -> ConsentState:
    return make.consent_state(subject, version, at=NOW, **allowed)


def record(key: bytes | None, value: bytes | None, offset: int = 0) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(
        topic="consent.state",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=(),
    )


class ReadyConsent:
    """A consent source that has caught up: a cache and nothing else."""

    def __init__(self, cache: ConsentCache) -> None:
        self.cache = cache
        self.caught_up = True

    def may_process(self, subject: str, purpose: str) -> bool:
        return self.cache.may_process(subject, purpose)

    async def wait_until_caught_up(self) -> None:
        return None


class LateConsent(ReadyConsent):
    """Catches up only when told to."""

    def __init__(self, cache: ConsentCache) -> None:
        super().__init__(cache)
        self.caught_up = False
        self.ready = asyncio.Event()
        self.waiting = asyncio.Event()

    async def wait_until_caught_up(self) -> None:
        self.waiting.set()
        await self.ready.wait()


def dropped(purpose: str, reason: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "pp_consent_filter_dropped_total", {"purpose": purpose, "reason": reason}
        )
        or 0.0
    )


def build(consent: Any, *purposes: str) -> tuple[KafkaBroker, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    broker = KafkaBroker()
    router = KafkaRouter(middlewares=[ConsentFilter(consent, *purposes)])

    @router.subscriber("crm.contacts", group_id="mailer", ack_policy=AckPolicy.NACK_ON_ERROR)
    async def handle(body: dict[str, Any]) -> None:
        seen.append(body)

    broker.include_router(router)
    return broker, seen


async def test_filter_passes_allowed_subjects_and_drops_and_counts_the_others() -> None:
    cache = ConsentCache()
    cache.apply("usr_yes", consent_state("usr_yes", 1, marketing_email=True).data)
    cache.apply("usr_no", consent_state("usr_no", 2, marketing_email=False).data)
    broker, seen = build(ReadyConsent(cache), "marketing_email")
    before = dropped("marketing_email", "not_allowed")
    async with TestKafkaBroker(broker) as test_broker:
        for subject in ("usr_yes", "usr_no", "usr_unknown"):
            await test_broker.publish({"to": subject}, "crm.contacts", key=subject.encode())
    assert seen == [{"to": "usr_yes"}]
    assert dropped("marketing_email", "not_allowed") - before == 2


async def test_filter_needs_every_named_purpose() -> None:
    cache = ConsentCache()
    cache.apply(
        "usr_1", consent_state("usr_1", 1, marketing_email=True, partner_marketing=False).data
    )
    broker, seen = build(ReadyConsent(cache), "marketing_email", "partner_marketing")
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish({"to": "usr_1"}, "crm.contacts", key=b"usr_1")
    assert seen == []


async def test_filter_reads_the_cloudevents_subject_when_there_is_no_key() -> None:
    cache = ConsentCache()
    cache.apply("usr_7", consent_state("usr_7", 1, analytics_cookies=True).data)
    broker, seen = build(ReadyConsent(cache), "analytics_cookies")
    before = dropped("analytics_cookies", "no_subject")
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish({"subject": "usr_7", "n": 1}, "crm.contacts")
        await test_broker.publish({"n": 2}, "crm.contacts")
    assert seen == [{"subject": "usr_7", "n": 1}]
    assert dropped("analytics_cookies", "no_subject") - before == 1


async def test_filter_waits_for_the_client_to_catch_up_before_deciding() -> None:
    cache = ConsentCache()
    consent = LateConsent(cache)
    broker, seen = build(consent, "marketing_email")
    async with TestKafkaBroker(broker) as test_broker:
        publish = asyncio.create_task(
            test_broker.publish({"to": "usr_late"}, "crm.contacts", key=b"usr_late")
        )
        await asyncio.wait_for(consent.waiting.wait(), 10)
        # The state arrives while the client is still reading the topic.
        cache.apply("usr_late", consent_state("usr_late", 1, marketing_email=True).data)
        consent.caught_up = True
        consent.ready.set()
        await asyncio.wait_for(publish, 10)
    assert seen == [{"to": "usr_late"}]


def test_filter_needs_a_purpose() -> None:
    with pytest.raises(ValueError):
        ConsentFilter(ReadyConsent(ConsentCache()))


def test_client_applies_states_tombstones_and_skips_other_records() -> None:
    client = ConsentClient("127.0.0.1:1")
    granted = consent_state("usr_1", 1, marketing_email=True)
    withdrawn = consent_state("usr_1", 2, marketing_email=False)
    closed = make.account_closed("usr_2", "acc_1", closed_at=NOW, at=NOW)
    client.apply_records(
        [
            record(*encode(granted), offset=0),
            record(*encode(consent_state("usr_2", 1, marketing_email=True)), offset=1),
            record(b"usr_3", b"{not json", offset=2),
            record(*encode(closed), offset=3),
        ]
    )
    assert client.may_process("usr_1", "marketing_email")
    assert client.may_process("usr_2", "marketing_email")
    assert "usr_3" not in client.cache
    client.apply_records([record(*encode(withdrawn), offset=4), record(b"usr_2", None, offset=5)])
    assert not client.may_process("usr_1", "marketing_email")
    assert not client.may_process("usr_2", "marketing_email")
    assert "usr_2" not in client.cache


async def test_filter_reads_the_subject_of_a_keyless_event_in_either_content_mode() -> None:
    from cloudevents.http import CloudEvent as SdkEvent
    from cloudevents.kafka import to_binary, to_structured

    cache = ConsentCache()
    cache.apply("usr_8", consent_state("usr_8", 1, analytics_cookies=True).data)
    broker, seen = build(ReadyConsent(cache), "analytics_cookies")
    attributes = {"type": "crm.contact.v1", "source": "crm", "subject": "usr_8"}
    attributes["datacontenttype"] = "application/json"  # SDK 1.x's to_binary needs it
    async with TestKafkaBroker(broker) as test_broker:
        for n, binary in enumerate([True, False]):
            event = SdkEvent.create(attributes, {"n": n})
            message = to_binary(event) if binary else to_structured(event)
            assert message.key is None
            await test_broker.publish(
                message.value,
                "crm.contacts",
                headers={k: v.decode() for k, v in message.headers.items()},
            )
    assert [body.get("n", body.get("data", {}).get("n")) for body in seen] == [0, 1]


def test_client_applies_a_state_record_of_either_content_mode() -> None:
    from cloudevents.http import CloudEvent as SdkEvent
    from cloudevents.kafka import to_binary

    state = consent_state("usr_4", 1, marketing_email=True)
    attributes = state.model_dump(mode="json", exclude={"data"}, exclude_none=True)
    message = to_binary(SdkEvent.create(attributes, state.data.model_dump(mode="json")))
    assert isinstance(message.value, bytes)
    binary = dataclasses.replace(
        record(b"usr_4", message.value), headers=list(message.headers.items())
    )
    client = ConsentClient("127.0.0.1:1")
    client.apply_records([binary])
    assert client.may_process("usr_4", "marketing_email")
