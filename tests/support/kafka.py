"""Small Kafka helpers for tests: produce, and read a topic until a condition holds."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.contract.codec import encode
from shared.contract.envelope import CloudEvent


async def produce(
    bootstrap: str, topic: str, items: Iterable[CloudEvent[Any] | tuple[bytes | None, bytes | None]]
) -> None:
    """Produce events (keyed by subject) or raw (key, value) pairs, in order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        for item in items:
            key, value = encode(item) if isinstance(item, CloudEvent) else item
            await producer.send(topic, value=value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str,
    topic: str,
    until: Callable[[list[Any]], bool] = lambda records: bool(records),
    timeout: float = 30.0,
    settle: float = 0.0,
) -> list[Any]:
    """Every record of `topic` from the start, once `until(records)` holds (or timeout)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",  # as the services' consumers read
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        satisfied_at: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
            if until(records):
                satisfied_at = satisfied_at or time.monotonic()
                if time.monotonic() - satisfied_at >= settle:
                    return records
        return records
    finally:
        await consumer.stop()
