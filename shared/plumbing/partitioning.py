"""Kafka's partitioning of keys, as the producer's `send()` does it, cached for the relay.

The relay builds its record batches per partition itself (`send_batch`), so it must pick each
record's partition exactly as `send()` would: same key, same partition, same order.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner


class PartitionCache:
    """The partition of each key as the producer's partitioner picks it in `send()`.

    With aiokafka's default partitioner (murmur2 of the key, as the Java client) a key's
    partition depends only on the topic's partitions: results are kept per topic while that
    set stays the same, up to `limit` keys per topic. Null keys (random partition) and other
    partitioners are asked every time, with the arguments `send()` gives them.
    """

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._topics: dict[str, tuple[frozenset[int], list[int], dict[bytes, int]]] = {}

    async def picker(self, producer: AIOKafkaProducer, topic: str) -> Callable[[bytes | None], int]:
        """A function key -> partition for `topic` (waits for the topic's metadata)."""
        partitions = await producer.partitions_for(topic)
        partitioner = producer._partitioner
        all_partitions = list(partitions)
        available = list(producer.client.cluster.available_partitions_for_topic(topic) or ())
        if not isinstance(partitioner, DefaultPartitioner):
            return lambda key: int(partitioner(key, all_partitions, available))
        entry = self._topics.get(topic)
        if entry is None or entry[0] != partitions or len(entry[2]) >= self.limit:
            entry = self._topics[topic] = (frozenset(partitions), all_partitions, {})
        _, ordered, known = entry
        count = len(ordered)

        def partition_of(key: bytes | None) -> int:
            if key is None:
                return int(partitioner(None, all_partitions, available))
            partition = known.get(key)
            if partition is None:
                partition = known[key] = ordered[(murmur2(key) & 0x7FFFFFFF) % count]
            return partition

        return partition_of


_M = 0x5BD1E995
_WORDS: dict[int, Callable[[bytes], tuple[int, ...]]] = {}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (Java client `Utils.murmur2`), equal to aiokafka's, without its overhead."""
    length = len(data)
    h = 0x9747B28C ^ length
    words = length >> 2
    if words:
        unpack = _WORDS.get(words)
        if unpack is None:
            unpack = _WORDS[words] = struct.Struct(f"<{words}I").unpack_from
        for k in unpack(data):
            k = (k * _M) & 0xFFFFFFFF
            k ^= k >> 24
            h = ((h * _M) & 0xFFFFFFFF) ^ ((k * _M) & 0xFFFFFFFF)
    extra = length & 3
    if extra:
        tail = length - extra
        if extra == 3:
            h ^= data[tail + 2] << 16
        if extra >= 2:
            h ^= data[tail + 1] << 8
        h = ((h ^ data[tail]) * _M) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * _M) & 0xFFFFFFFF
    return h ^ (h >> 15)
