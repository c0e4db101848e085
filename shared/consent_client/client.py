"""Follow the compacted `consent.state` topic into a local cache and answer `may_process`.

    client = ConsentClient("kafka:9092")
    await client.start()
    await client.wait_until_caught_up()      # readiness: the topic has been read to its end
    if client.may_process("usr_42", "marketing_email"):
        ...
    await client.stop()

Every replica reads every partition from the beginning (no consumer group, no commits): the
cache is rebuilt from the topic at each start, which is what a compacted topic is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from ..contract.codec import DecodeError, decode_kafka
from ..contract.events import ConsentState
from .cache import DEFAULT_ALLOWED, ConsentCache, Outcome

log = logging.getLogger(__name__)

RECORDS = Counter(
    "pp_consent_client_records_total",
    "consent.state records read by consent clients, by outcome",
    ["outcome"],
)


class ConsentClient:
    """A read-only follower of `consent.state`; `may_process` never touches the network."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = "consent.state",
        *,
        default_allowed: Iterable[str] = DEFAULT_ALLOWED,
        client_id: str = "privacy-plane-consent-client",
        **kafka_options: Any,
    ) -> None:
        """`kafka_options` go to aiokafka (security_protocol, sasl_*, ssl_context, ...)."""
        self.topic = topic
        self.cache = ConsentCache(default_allowed)
        self._consumer_options: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id,
            "group_id": None,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            # the relay publishes in transactions: a deposed leader's aborted records are
            # skipped, and "caught up" is measured against the last stable offset
            "isolation_level": "read_committed",
            **kafka_options,
        }
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._targets: dict[TopicPartition, int] = {}
        self._caught_up = asyncio.Event()

    def may_process(self, subject: str, purpose: str) -> bool:
        """True when `subject` allows `purpose` (or the purpose's default allows it)."""
        return self.cache.may_process(subject, purpose)

    @property
    def caught_up(self) -> bool:
        """True once every record present at start has been read."""
        return self._caught_up.is_set()

    async def wait_until_caught_up(self) -> None:
        """Block until the topic has been read up to where it ended at start.

        Bound it with `asyncio.timeout(...)`; raises the follower's error if it died.
        """
        if self._task is None:
            raise RuntimeError("ConsentClient.start() has not been called")
        if self._caught_up.is_set():
            return
        waiter = asyncio.ensure_future(self._caught_up.wait())
        try:
            done, _ = await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if waiter not in done:
            self._task.result()  # the follower died: raise its error
            raise RuntimeError("consent client stopped before catching up")

    async def start(self) -> None:
        """Take every partition of the topic (no group: all of them), from the beginning."""
        consumer = AIOKafkaConsumer(**self._consumer_options)
        await consumer.start()
        try:
            if self.topic not in await consumer.topics():
                raise LookupError(f"topic {self.topic!r} does not exist")
            consumer.subscribe([self.topic])
            assigned = await _assignment(consumer)
            await consumer.seek_to_beginning(*assigned)
            self._targets = {
                tp: end for tp, end in (await consumer.end_offsets(assigned)).items() if end > 0
            }
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        if not self._targets:
            self._caught_up.set()
        self._task = asyncio.create_task(self._follow(consumer), name="consent-client")

    async def stop(self) -> None:
        """Stop following (the cache keeps its last content)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def __aenter__(self) -> ConsentClient:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            except KafkaError as exc:  # transient: aiokafka reconnects; keep the cache, retry
                log.warning("consent client fetch failed, retrying: %s", type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            for records in batch.values():
                self.apply_records(records)
            if not self._caught_up.is_set():
                await self._check_caught_up(consumer)

    async def _check_caught_up(self, consumer: AIOKafkaConsumer) -> None:
        for tp, end in list(self._targets.items()):
            if await consumer.position(tp) >= end:
                del self._targets[tp]
        if not self._targets:
            log.info("consent client caught up: %d subjects", len(self.cache))
            self._caught_up.set()

    def apply_records(self, records: Iterable[ConsumerRecord[Any, Any]]) -> None:
        """Apply `consent.state` records in partition order (exposed for tests and tools)."""
        for record in records:
            RECORDS.labels(outcome=self._apply_one(record)).inc()

    def _apply_one(self, record: ConsumerRecord[Any, Any]) -> str:
        key: bytes | None = record.key
        if record.value is None:
            if key is None:
                return "invalid"
            return self.cache.erase(key.decode("utf-8", "replace")).value
        try:
            event = decode_kafka(record.value, record.headers or ())
        except DecodeError as exc:
            log.warning(
                "consent.state record skipped: %s (partition %s offset %s)",
                exc.reason,
                record.partition,
                record.offset,
            )
            return "invalid"
        if not isinstance(event, ConsentState):
            return "invalid"
        outcome: Outcome = self.cache.apply(event.subject, event.data)
        return outcome.value


async def _assignment(consumer: AIOKafkaConsumer) -> list[TopicPartition]:
    """The partitions a group-less subscription gets once metadata arrived (all of them)."""
    for _ in range(600):  # up to 30 s
        if consumer.assignment():
            return sorted(consumer.assignment())
        await asyncio.sleep(0.05)
    raise TimeoutError("no partitions assigned to the consent.state subscription")
