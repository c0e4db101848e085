"""Kafka clients built from settings: broker, producer, topic creation."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.cluster import ClusterMetadata
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.protocol.metadata import MetadataRequest

from shared.contract.topics import Topics
from shared.plumbing.settings import Compression, KafkaSecurity

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicPolicy:
    """How topics are declared: partitions, replication, bounded retention (DESIGN §5) and the
    in-sync replicas an acks=all write needs (default: 2 from a replication factor of 3 up).

    `state_delete_retention_ms` keeps a `consent.state` tombstone that long after compaction:
    a consent client that stops fetching for longer may miss an erasure, so it reloads
    (shared/consent_client/README.md).
    """

    partitions: int = 6
    replication: int = 1
    min_insync_replicas: int | None = None
    changes_retention_ms: int = 35 * DAY_MS
    """consent.changes carries evidence (personal): longer than any consumer may be down."""
    requests_retention_ms: int = 90 * DAY_MS
    jobs_retention_ms: int = 90 * DAY_MS
    receipts_retention_ms: int = 90 * DAY_MS
    deadletter_retention_ms: int = 14 * DAY_MS
    state_delete_retention_ms: int = 7 * DAY_MS

    @property
    def min_isr(self) -> int:
        """min.insync.replicas: one replica may be down without refusing writes."""
        if self.min_insync_replicas is not None:
            return self.min_insync_replicas
        return min(2, max(1, self.replication - 1))

    def __post_init__(self) -> None:
        isr = self.min_insync_replicas
        if isr is not None and not 1 <= isr <= self.replication:
            raise ValueError(
                f"min.insync.replicas {isr} must be between 1 and the replication factor "
                f"{self.replication} (more would refuse every acks=all write)"
            )

    def configs(self, topics: Topics) -> dict[str, dict[str, str]]:
        """Per-topic configs: compaction for state, no limit for kept topics, bounds elsewhere."""
        bounded = {
            topics.consent_changes: self.changes_retention_ms,
            topics.privacy_requests: self.requests_retention_ms,
            topics.requests_status: self.requests_retention_ms,
            topics.privacy_jobs: self.jobs_retention_ms,
            topics.privacy_receipts: self.receipts_retention_ms,
            topics.deadletter: self.deadletter_retention_ms,
        }
        result: dict[str, dict[str, str]] = {}
        for name in topics.all():
            if name in topics.compacted():
                result[name] = {
                    "cleanup.policy": "compact",
                    "min.compaction.lag.ms": "60000",
                    "delete.retention.ms": str(self.state_delete_retention_ms),
                }
            elif name in topics.kept():
                result[name] = {"cleanup.policy": "delete", "retention.ms": "-1"}
            else:
                result[name] = {"cleanup.policy": "delete", "retention.ms": str(bounded[name])}
            result[name]["min.insync.replicas"] = str(self.min_isr)
        return result


def bootstrap_list(servers: str) -> list[str]:
    """`host:port[,host:port]` as a list: FastStream takes a string for one address only."""
    return [server.strip() for server in servers.split(",") if server.strip()]


async def ensure_topics(
    bootstrap: str,
    topics: Topics,
    policy: TopicPolicy = TopicPolicy(),
    security: KafkaSecurity | None = None,
) -> list[str]:
    """Create every contract topic that does not exist yet; returns those created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, **(security or KafkaSecurity()).client_kwargs()
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, policy.partitions, policy.replication, topic_configs=configs)
            for name, configs in policy.configs(topics).items()
            if name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # a replica was quicker
                await admin.create_topics(wanted)
            await _wait_visible(admin, [t.name for t in wanted])
        return [t.name for t in wanted]
    finally:
        await admin.close()


async def _wait_visible(admin: AIOKafkaAdminClient, names: list[str], within: float = 30) -> None:
    """Until the broker's metadata shows every topic with a leader for each partition: a
    client asking right after creation may otherwise be told the topic does not exist."""
    deadline = time.monotonic() + within
    while True:
        described = await admin.describe_topics(names)
        if all(
            t["error_code"] == 0
            and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not visible after {within:.0f} s: {', '.join(names)}")
        await asyncio.sleep(0.05)


def make_producer(
    bootstrap: str,
    security: KafkaSecurity | None = None,
    compression: Compression = "none",
    **extra: Any,
) -> AIOKafkaProducer:
    """An idempotent producer (acks=all) for the outbox relay and tools.

    `compression` applies per record batch. Consent states are repetitive JSON of ~1 KB:
    zstd makes a batch of them 10-80 times smaller for the broker, its disk and every
    consumer, and costs the producer no more time than copying the bytes uncompressed.
    """
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
        compression_type=None if compression == "none" else compression,
        **(security or KafkaSecurity()).client_kwargs(),
        **extra,
    )


async def unreachable_leaders(admin: AIOKafkaAdminClient, topics: Collection[str]) -> list[str]:
    """The partitions of `topics` ("topic/partition") without a leader this client can reach.

    A broker cut off from the controller quorum still answers metadata requests (with what it
    last knew) while no acks=all write can complete: a partition whose leader is down shows it.
    Raises KafkaError when no broker answers at all.
    """
    client = admin._client  # aiokafka offers no metadata request of our own choosing
    nodes = [broker.nodeId for broker in client.cluster.brokers()]
    random.shuffle(nodes)  # not always the same survivor
    metadata = ClusterMetadata()
    for node in nodes:
        if await client.ready(node):
            request = MetadataRequest(list(topics), allow_auto_topic_creation=False)
            metadata.update_metadata(await client.send(node, request))
            break
    else:
        raise KafkaError("no broker of the cluster answers")
    missing = []
    for topic in sorted(topics):
        for partition in sorted(metadata.partitions_for_topic(topic) or ()):
            leader = metadata.leader_for_partition(TopicPartition(topic, partition))
            if leader is None or leader < 0 or not await client.ready(leader):
                missing.append(f"{topic}/{partition}")
    return missing
