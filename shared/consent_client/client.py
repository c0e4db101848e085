"""Follow the compacted `consent.state` topic into a local cache and answer `may_process`.

    client = ConsentClient("kafka:9092")
    await client.start()
    await client.wait_until_caught_up()      # readiness: the topic has been read to its end
    if client.may_process("usr_42", "marketing_email"):
        ...
    await client.stop()

Every replica reads every partition from the beginning (no consumer group, no commits): the
cache is rebuilt from the topic at each start, which is what a compacted topic is for. A
running client that got no fetch response for half the topic's tombstone retention reloads
the same way: an erasure's tombstone may have been compacted away meanwhile.
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
RELOADS = Counter(
    "pp_consent_client_reloads_total",
    "consent.state reloads from the beginning after a fetch gap longer than half the tombstone "
    "retention",
)

TOMBSTONE_RETENTION_S = 7 * 24 * 3600.0
"""consent.state's delete.retention.ms (TopicPolicy), in seconds."""


class ConsentClient:
    """A read-only follower of `consent.state`; `may_process` never touches the network."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = "consent.state",
        *,
        default_allowed: Iterable[str] = DEFAULT_ALLOWED,
        client_id: str = "privacy-plane-consent-client",
        tombstone_retention: float = TOMBSTONE_RETENTION_S,
        **kafka_options: Any,
    ) -> None:
        """`kafka_options` go to aiokafka (security_protocol, sasl_*, ssl_context, ...).

        `tombstone_retention`: the topic's `delete.retention.ms` in seconds. A partition that
        got no fetch response for half of it (a paused process, a partitioned network) makes
        the client reload the topic; half leaves room for a client that lags behind the end.
        """
        self.topic = topic
        self.cache = ConsentCache(default_allowed)
        self._max_gap = tombstone_retention / 2
        self._polled: dict[TopicPartition, int] = {}
        self._reload_due = False
        self._loading: ConsentCache | None = None
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
                self._notice_gap(consumer)
                if self._reload_due:  # the batch is read again from the beginning
                    await self._reload(consumer)
                    continue
                for records in batch.values():
                    self.apply_records(records)
                if self._targets:
                    await self._check_targets(consumer)
            except KafkaError as exc:  # transient: aiokafka reconnects; keep the cache, retry
                log.warning("consent client fetch failed, retrying: %s", type(exc).__name__)
                await asyncio.sleep(1.0)

    def _notice_gap(self, consumer: AIOKafkaConsumer) -> None:
        """Mark a reload due when a partition's fetch responses paused longer than allowed."""
        for tp in consumer.assignment():
            polled = consumer.last_poll_timestamp(tp)  # ms, set by each fetch response
            if polled is None:
                continue
            before = self._polled.get(tp, polled)
            self._polled[tp] = polled
            if (polled - before) / 1000 > self._max_gap:
                log.warning(
                    "consent client got no fetch response for %.0f s on partition %s "
                    "(limit %.0f s, half the tombstone retention): reloading %s",
                    (polled - before) / 1000,
                    tp.partition,
                    self._max_gap,
                    self.topic,
                )
                self._reload_due = True

    async def _reload(self, consumer: AIOKafkaConsumer) -> None:
        """Read every partition again into a fresh cache; it replaces the current one when done.

        Until then decisions come from the current cache: a subject whose tombstone was
        compacted away during the gap is absent from the fresh one.
        """
        assigned = sorted(consumer.assignment())
        ends = await consumer.end_offsets(assigned)
        await consumer.seek_to_beginning(*assigned)
        self._loading = ConsentCache(self.cache.default_allowed)
        self._targets = {tp: end for tp, end in ends.items() if end > 0}
        self._polled.clear()
        self._reload_due = False
        RELOADS.inc()
        if not self._targets:
            await self._check_targets(consumer)

    async def _check_targets(self, consumer: AIOKafkaConsumer) -> None:
        for tp, end in list(self._targets.items()):
            if await consumer.position(tp) >= end:
                del self._targets[tp]
        if self._targets:
            return
        if self._loading is not None:
            self.cache, self._loading = self._loading, None
            log.info("consent client reloaded: %d subjects", len(self.cache))
        if not self._caught_up.is_set():
            log.info("consent client caught up: %d subjects", len(self.cache))
            self._caught_up.set()

    def apply_records(self, records: Iterable[ConsumerRecord[Any, Any]]) -> None:
        """Apply `consent.state` records in partition order (exposed for tests and tools)."""
        cache = self._loading if self._loading is not None else self.cache
        for record in records:
            RECORDS.labels(outcome=self._apply_one(cache, record)).inc()

    def _apply_one(self, cache: ConsentCache, record: ConsumerRecord[Any, Any]) -> str:
        key: bytes | None = record.key
        if record.value is None:
            if key is None:
                return "invalid"
            return cache.erase(key.decode("utf-8", "replace")).value
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
        outcome: Outcome = cache.apply(event.subject, event.data)
        return outcome.value


async def _assignment(consumer: AIOKafkaConsumer) -> list[TopicPartition]:
    """The partitions a group-less subscription gets once metadata arrived (all of them)."""
    for _ in range(600):  # up to 30 s
        if consumer.assignment():
            return sorted(consumer.assignment())
        await asyncio.sleep(0.05)
    raise TimeoutError("no partitions assigned to the consent.state subscription")
