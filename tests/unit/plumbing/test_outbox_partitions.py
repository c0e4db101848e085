"""The relay's partition choice: Kafka's murmur2, cached per topic, as `send()` picks it."""

from __future__ import annotations

import random
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from shared.plumbing.partitioning import PartitionCache, murmur2


def test_murmur2_equals_aiokafka_for_every_length_and_byte():
    rng = random.Random(3)
    keys = [bytes(rng.randrange(256) for _ in range(n)) for n in range(80) for _ in range(40)]
    keys += [b"", b"\x00", b"\xff" * 7, b"usr_1", "usr_ü".encode()]
    for key in keys:
        assert murmur2(key) == aiokafka_murmur2(key), key


class FakeCluster:
    def __init__(self, producer: FakeProducer) -> None:
        self._producer = producer

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(self._producer.partitions)


class FakeClient:
    def __init__(self, producer: FakeProducer) -> None:
        self.cluster = FakeCluster(producer)


class FakeProducer:
    """What `PartitionCache` uses of an AIOKafkaProducer."""

    def __init__(self, partitions: int, partitioner: Any = None) -> None:
        self.partitions = set(range(partitions))
        self._partitioner = partitioner or DefaultPartitioner()
        self.client = FakeClient(self)

    async def partitions_for(self, topic: str) -> set[int]:
        return set(self.partitions)

    def send_would_pick(self, key: bytes) -> int:
        """AIOKafkaProducer._partition for a send() without an explicit partition."""
        return int(self._partitioner(key, list(self.partitions), list(self.partitions)))


async def test_partitions_are_those_send_picks_and_a_new_partition_count_invalidates_them():
    producer = FakeProducer(3)
    cache = PartitionCache()
    keys = [f"usr_{i}".encode() for i in range(2000)]
    pick = await cache.picker(producer, "t")
    assert [pick(k) for k in keys] == [producer.send_would_pick(k) for k in keys]
    assert [pick(k) for k in keys] == [producer.send_would_pick(k) for k in keys]  # cached

    producer.partitions = set(range(7))  # partitions were added
    pick = await cache.picker(producer, "t")
    assert [pick(k) for k in keys] == [producer.send_would_pick(k) for k in keys]
    assert len({pick(k) for k in keys}) == 7


async def test_the_cache_is_bounded_per_topic():
    producer = FakeProducer(6)
    cache = PartitionCache(limit=100)
    for round_ in range(5):
        pick = await cache.picker(producer, "t")
        keys = [f"usr_{round_}_{i}".encode() for i in range(100)]
        assert [pick(k) for k in keys] == [producer.send_would_pick(k) for k in keys]
        assert len(cache._topics["t"][2]) <= 100


async def test_null_keys_and_other_partitioners_are_asked_every_time():
    calls: list[bytes | None] = []

    def last_partition(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        calls.append(key)
        return all_partitions[-1]

    producer = FakeProducer(4, partitioner=last_partition)
    pick = await PartitionCache().picker(producer, "t")
    assert [pick(b"a"), pick(b"a"), pick(None)] == [3, 3, 3]
    assert calls == [b"a", b"a", None]

    default = await PartitionCache().picker(FakeProducer(4), "t")
    assert {default(None) for _ in range(200)} == {0, 1, 2, 3}  # random, as send() does
