"""Helpers several scenarios share."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.harness import Child
from bench.stats import prometheus_sum


def has_service(name: str) -> bool:
    """Whether `services/<name>/app.py` exists yet (others are still writing them)."""
    return importlib.util.find_spec(f"services.{name}.app") is not None


class TopicWatcher:
    """Reads a topic from the start in the background, calling `on_record` for each record."""

    def __init__(self, kafka: str, topic: str, on_record: Callable[[Any], None]) -> None:
        self.kafka, self.topic, self.on_record = kafka, topic, on_record
        self.count = 0
        self.last_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.kafka,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",  # the relay publishes in transactions
            fetch_max_bytes=16 * 1024 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.time()
            for part in batch.values():
                for record in part:
                    self.count += 1
                    self.last_at = now
                    self.on_record(record)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


async def wait_until(check: Callable[[], bool], within: float, every: float = 0.1) -> bool:
    """Poll `check` until true or the timeout; returns its last value."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(every)
    return check()


def state_purposes(value: bytes | None) -> tuple[int, dict[str, Any]] | None:
    """(version, purposes) of a consent.state value; None for a tombstone."""
    if value is None:
        return None
    data = orjson.loads(value).get("data", {})
    return int(data.get("version", 0)), data.get("purposes", {})


def fail_note(exc: BaseException, child: Child | None = None) -> str:
    text = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    if child is not None and not child.alive():
        text += f" ({child.name} exited {child.proc.returncode})"
    return text


async def metrics(child: Child) -> str:
    """The service's Prometheus text (empty if it does not answer)."""
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.get(f"http://127.0.0.1:{child.port}/metrics")
            return response.text
    except httpx.HTTPError:
        return ""


def batch_note(before: str, after: str, wall: float) -> str:
    """How the pipeline spent a run: batches, their mean size and time, share of wall time."""
    count = prometheus_sum(after, "pp_batch_seconds_count") - prometheus_sum(
        before, "pp_batch_seconds_count"
    )
    seconds = prometheus_sum(after, "pp_batch_seconds_sum") - prometheus_sum(
        before, "pp_batch_seconds_sum"
    )
    events = prometheus_sum(after, "pp_events_consumed_total") - prometheus_sum(
        before, "pp_events_consumed_total"
    )
    if count <= 0 or wall <= 0:
        return ""
    return (
        f"{count:,.0f} batches of {events / count:,.0f} events, {seconds / count * 1000:,.0f} ms "
        f"each; pipeline busy {seconds / wall:.0%} of the time"
    )


async def wait_group(kafka: str, group: str, members: int, within: float = 60) -> None:
    """Until consumer group `group` is stable with `members` members (before load starts, so a
    rebalance does not pause the measured run)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            described = (await admin.describe_consumer_groups([group]))[0].groups[0]
            if described[2] == "Stable" and len(described[5]) == members:
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"group {group} did not settle with {members} members")
    finally:
        await admin.close()


class Completion:
    """Whether a service has finished a workload, checked without reading its output: its
    group's committed offsets reached the end of the input topic and its outbox is empty
    (the outbox rows commit with the offsets' transaction, so nothing is left to publish)."""

    def __init__(
        self, kafka: str, group: str, topic: str, conn: Any = None, schema: str = ""
    ) -> None:
        """Without `conn`, the outbox is not checked (a consumer that publishes nothing)."""
        self.kafka, self.group, self.topic = kafka, group, topic
        self.conn, self.schema = conn, schema

    async def wait(self, within: float, every: float = 0.1) -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.kafka)
        await admin.start()
        await consumer.start()
        try:
            partitions = [
                TopicPartition(self.topic, p)
                for p in sorted(await _partitions(consumer, self.topic))
            ]
            ends = await consumer.end_offsets(partitions)
            empty = f'SELECT NOT EXISTS (SELECT FROM "{self.schema}".outbox)'
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                committed = await admin.list_consumer_group_offsets(self.group)
                done = all(
                    tp in committed and committed[tp].offset >= end
                    for tp, end in ends.items()
                    if end > 0
                )
                if done and (self.conn is None or await self.conn.fetchval(empty)):
                    return True
                await asyncio.sleep(every)
            return False
        finally:
            await consumer.stop()
            await admin.close()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    found = consumer.partitions_for_topic(topic)
    if not found:
        await consumer._client.force_metadata_update()
        found = consumer.partitions_for_topic(topic)
    return set(found or ())


async def read_latest(kafka: str, topic: str) -> tuple[dict[bytes, bytes | None], float]:
    """Every key's newest value on `topic` (read to its end offsets now), and the newest record
    timestamp (when the last one was produced, in seconds)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka,
        enable_auto_commit=False,
        isolation_level="read_committed",  # the relay publishes in transactions
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    latest: dict[bytes, bytes | None] = {}
    newest = 0
    try:
        tps = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        ends = {tp: end for tp, end in (await consumer.end_offsets(tps)).items() if end > 0}
        consumer.assign(list(ends))
        if ends:
            await consumer.seek_to_beginning(*ends)
        left = dict(ends)
        while left:
            batch = await consumer.getmany(*left, timeout_ms=200, max_records=20_000)
            for tp, records in batch.items():
                for record in records:
                    if record.key is not None and record.offset < left.get(tp, 0):
                        latest[record.key] = record.value
                if records:
                    newest = max(newest, records[-1].timestamp)
            for tp, end in list(left.items()):
                # the position: a commit marker, not a record, ends a transactional topic
                if await consumer.position(tp) >= end:
                    del left[tp]
        return latest, newest / 1000
    finally:
        await consumer.stop()
