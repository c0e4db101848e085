"""Topics that follow their declaration: what differs from the TopicPolicy, and the fix.

`check` compares every contract topic with its declaration (partitions, replication factor and
each declared config: cleanup.policy, retention.ms, min.insync.replicas, ...). `apply` creates
the missing topics, alters the configs that differ (keeping other per-topic overrides) and adds
partitions only when asked: more partitions move keys to other partitions, so per-key order
breaks across the change. A replication factor or a partition count above the declaration is
reported and left alone (it needs a reassignment or a new topic).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code

from shared.contract.topics import Topics
from shared.plumbing.kafka import TopicPolicy, ensure_topics
from shared.plumbing.settings import KafkaSecurity

DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs' config_source of a per-topic override
MISSING = "(missing)"


@dataclass(frozen=True)
class Drift:
    """One setting of one topic that differs from its declaration."""

    topic: str
    setting: str  # "topic", "partitions", "replication" or a config name
    declared: str
    actual: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.setting} is {self.actual}, declared {self.declared}"

    @property
    def alterable(self) -> bool:
        """Fixed by `apply` without a flag: a missing topic or a config value."""
        return self.setting not in ("partitions", "replication")


@dataclass(frozen=True)
class Actual:
    """What the broker says about one topic."""

    partitions: int
    replication: int
    configs: dict[str, str]
    overrides: dict[str, str]  # the per-topic configs (kept when others are altered)


@dataclass
class Applied:
    """What `apply` did, and the differences it left."""

    created: list[str] = field(default_factory=list)
    altered: dict[str, list[str]] = field(default_factory=dict)
    grown: dict[str, int] = field(default_factory=dict)
    remaining: list[Drift] = field(default_factory=list)


def _same(name: str, declared: str, actual: str) -> bool:
    if name == "cleanup.policy":  # a set: "compact,delete" == "delete,compact"
        return sorted(declared.split(",")) == sorted(actual.replace(" ", "").split(","))
    return declared == actual


def compare(
    declared: dict[str, dict[str, str]], policy: TopicPolicy, actual: dict[str, Actual]
) -> list[Drift]:
    """Every difference between the declared topics and the actual ones (pure)."""
    drifts: list[Drift] = []
    for name, configs in declared.items():
        found = actual.get(name)
        if found is None:
            drifts.append(Drift(name, "topic", "present", MISSING))
            continue
        if found.partitions != policy.partitions:
            drifts.append(Drift(name, "partitions", str(policy.partitions), str(found.partitions)))
        if found.replication != policy.replication:
            drifts.append(
                Drift(name, "replication", str(policy.replication), str(found.replication))
            )
        for key, value in sorted(configs.items()):
            now = found.configs.get(key, MISSING)
            if not _same(key, value, now):
                drifts.append(Drift(name, key, value, now))
    return drifts


def _raise_for(code: int, message: str | None, what: str) -> None:
    if code:
        raise for_code(code)(f"{what}: {message or ''}".rstrip(": "))


async def describe(admin: AIOKafkaAdminClient, names: Iterable[str]) -> dict[str, Actual]:
    """Partitions, replication factor and configs of those of `names` that exist."""
    existing = sorted(set(names) & set(await admin.list_topics()))
    if not existing:
        return {}
    metadata = {t["topic"]: t for t in await admin.describe_topics(existing)}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in existing]
    configs: dict[str, list[dict[str, Any]]] = {}
    for response in await admin.describe_configs(resources):
        for resource in response.to_object()["resources"]:
            name = resource["resource_name"]
            _raise_for(resource["error_code"], resource["error_message"], f"describe {name}")
            configs[name] = resource["config_entries"]
    result: dict[str, Actual] = {}
    for name in existing:
        partitions = metadata[name]["partitions"]
        entries = configs.get(name, [])
        result[name] = Actual(
            partitions=len(partitions),
            replication=max((len(p["replicas"]) for p in partitions), default=0),
            configs={e["config_names"]: e["config_value"] for e in entries},
            overrides={
                e["config_names"]: e["config_value"]
                for e in entries
                if e["config_source"] == DYNAMIC_TOPIC_CONFIG and e["config_value"] is not None
            },
        )
    return result


def _admin(bootstrap: str, security: KafkaSecurity | None) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, **(security or KafkaSecurity()).client_kwargs()
    )


async def check(
    bootstrap: str, topics: Topics, policy: TopicPolicy, security: KafkaSecurity | None = None
) -> list[Drift]:
    """The differences between the declared contract topics and the broker's (none: in sync)."""
    declared = policy.configs(topics)
    admin = _admin(bootstrap, security)
    await admin.start()
    try:
        return compare(declared, policy, await describe(admin, declared))
    finally:
        await admin.close()


async def apply(
    bootstrap: str,
    topics: Topics,
    policy: TopicPolicy,
    security: KafkaSecurity | None = None,
    *,
    add_partitions: bool = False,
) -> Applied:
    """Create the missing topics, alter differing configs, grow partitions if asked."""
    declared = policy.configs(topics)
    applied = Applied(created=await ensure_topics(bootstrap, topics, policy, security))
    admin = _admin(bootstrap, security)
    await admin.start()
    try:
        actual = await describe(admin, declared)
        drifts = compare(declared, policy, actual)
        changed: dict[str, list[str]] = {}
        for drift in drifts:
            if drift.alterable and drift.setting != "topic":
                changed.setdefault(drift.topic, []).append(drift.setting)
        if changed:
            # AlterConfigs replaces a topic's whole override set: send the others back too.
            resources = [
                ConfigResource(
                    ConfigResourceType.TOPIC, name, {**actual[name].overrides, **declared[name]}
                )
                for name in sorted(changed)
            ]
            for response in await admin.alter_configs(resources):
                for resource in response.to_object()["resources"]:
                    name = resource["resource_name"]
                    _raise_for(resource["error_code"], resource["error_message"], f"alter {name}")
            applied.altered = changed
        short = {
            d.topic: policy.partitions
            for d in drifts
            if d.setting == "partitions" and int(d.actual) < policy.partitions
        }
        if add_partitions and short:
            await admin.create_partitions({n: NewPartitions(c) for n, c in short.items()})
            applied.grown = short
        applied.remaining = await _settled(admin, declared, policy, changed, applied.grown)
        return applied
    finally:
        await admin.close()


async def _settled(
    admin: AIOKafkaAdminClient,
    declared: dict[str, dict[str, str]],
    policy: TopicPolicy,
    changed: dict[str, list[str]],
    grown: dict[str, int],
    within: float = 15,
) -> list[Drift]:
    """The differences left, once the broker's metadata shows what was just changed."""
    deadline = time.monotonic() + within
    while True:
        drifts = compare(declared, policy, await describe(admin, declared))
        pending = [
            d
            for d in drifts
            if d.setting in changed.get(d.topic, ())
            or (d.setting == "partitions" and d.topic in grown)
        ]
        if not pending or time.monotonic() > deadline:
            return drifts
        await asyncio.sleep(0.1)
