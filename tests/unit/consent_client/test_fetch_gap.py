"""The client's reload after a fetch gap, on a fake consumer (the fault suite runs it for real)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from shared.consent_client import ConsentClient
from shared.contract.codec import encode
from tests.support import events as make

TP = TopicPartition("consent.state", 0)
AT = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


class FakeConsumer:
    """What the client asks of aiokafka: assignment, poll times, ends, seeks, positions."""

    def __init__(self) -> None:
        self.polled_ms: int | None = None
        self.at = 0
        self.end = 0
        self.seeks = 0

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def last_poll_timestamp(self, tp: TopicPartition) -> int | None:
        return self.polled_ms

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, self.end)

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        self.seeks += 1
        self.at = 0

    async def position(self, tp: TopicPartition) -> int:
        return self.at


def state(subject: str, version: int, offset: int) -> ConsumerRecord[Any, Any]:
    key, value = encode(make.consent_state(subject, version, at=AT, marketing_email=True))
    return ConsumerRecord(
        TP.topic, 0, offset, 0, 0, key, value, None, len(key or b""), len(value or b""), ()
    )


async def test_a_gap_over_half_the_retention_reloads_into_a_fresh_cache_swapped_when_done() -> None:
    client = ConsentClient("unused:9092", tombstone_retention=10.0)
    consumer: Any = FakeConsumer()
    client.apply_records([state("usr_erased", 1, 0), state("usr_kept", 1, 1)])
    for polled in (1_000, 1_500, 5_900):  # fetch responses 0.5 s and 4.4 s apart: fine
        consumer.polled_ms = polled
        client._notice_gap(consumer)
    assert not client._reload_due
    consumer.polled_ms = 11_000  # 5.1 s without a response: its tombstone may be gone
    client._notice_gap(consumer)
    assert client._reload_due

    consumer.end = 2  # the erased subject's state and tombstone were compacted away
    await client._reload(consumer)
    assert consumer.seeks == 1
    client.apply_records([state("usr_kept", 1, 0)])
    assert "usr_erased" in client.cache  # answers come from the old cache until the end
    consumer.at = 2
    await client._check_targets(consumer)
    assert "usr_erased" not in client.cache
    assert client.cache.get("usr_kept") is not None
    assert not client._reload_due
