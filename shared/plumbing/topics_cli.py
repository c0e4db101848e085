"""Make every contract topic (DESIGN §3) follow the policy given by environment variables.

Used by docker compose (`topics-init`) and `deploy/local/run`:

    python -m shared.plumbing.topics_cli [--wait SECONDS] [--dry-run | --check] [--add-partitions]

By default it applies the declaration: creates the missing topics and alters the configs that
differ (retention, cleanup policy, min.insync.replicas); it adds partitions only with
--add-partitions (keys then move to other partitions: per-key order breaks across the change).
--check changes nothing, prints the differences and exits 1 when there are any.

Environment (all optional except the bootstrap servers):
    KAFKA_BOOTSTRAP_SERVERS                  host:port[,host:port]
    KAFKA__SECURITY_PROTOCOL, KAFKA__SASL_*  as the services (TLS, SASL/SCRAM)
    TOPICS__<NAME>                           a topic name override, e.g. TOPICS__CONSENT_STATE
    TOPIC_PARTITIONS, TOPIC_REPLICATION      default 6 and 1 (a three-broker cluster: 3)
    TOPIC_MIN_INSYNC_REPLICAS                default 1, 2 from a replication factor of 3
    TOPIC_CHANGES_RETENTION_MS               consent.changes (evidence): default 35 days
    TOPIC_REQUESTS_RETENTION_MS, TOPIC_JOBS_RETENTION_MS, TOPIC_RECEIPTS_RETENTION_MS,
    TOPIC_DEADLETTER_RETENTION_MS            bounded retention (defaults: 90, 90, 90, 14 days)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import IO, TypeVar

from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.contract.topics import Topics
from shared.plumbing import topic_drift
from shared.plumbing.kafka import TopicPolicy
from shared.plumbing.secrets import SecretFileSettings
from shared.plumbing.settings import KafkaSecurity

_DEFAULTS = TopicPolicy()
T = TypeVar("T")


class TopicsInitSettings(SecretFileSettings):
    """What the topic initialiser reads from the environment."""

    model_config = SettingsConfigDict(extra="ignore", env_nested_delimiter="__")

    kafka_bootstrap_servers: str = Field(description="host:port[,host:port]")
    kafka: KafkaSecurity = KafkaSecurity()
    topics: Topics = Topics()
    topic_partitions: int = Field(_DEFAULTS.partitions, ge=1)
    topic_replication: int = Field(_DEFAULTS.replication, ge=1)
    topic_min_insync_replicas: int | None = Field(_DEFAULTS.min_insync_replicas, ge=1)
    topic_changes_retention_ms: int = Field(_DEFAULTS.changes_retention_ms, ge=1)
    topic_requests_retention_ms: int = Field(_DEFAULTS.requests_retention_ms, ge=-1)
    topic_jobs_retention_ms: int = Field(_DEFAULTS.jobs_retention_ms, ge=-1)
    topic_receipts_retention_ms: int = Field(_DEFAULTS.receipts_retention_ms, ge=-1)
    topic_deadletter_retention_ms: int = Field(_DEFAULTS.deadletter_retention_ms, ge=-1)

    @field_validator("topic_min_insync_replicas", mode="before")
    @classmethod
    def _empty_is_the_broker_default(cls, value: object) -> object:
        return None if value == "" else value  # compose passes an unset variable as ""

    @model_validator(mode="after")
    def _isr_within_replication(self) -> TopicsInitSettings:
        isr = self.topic_min_insync_replicas
        if isr is not None and isr > self.topic_replication:
            raise ValueError("topic_min_insync_replicas exceeds topic_replication")
        return self

    def policy(self) -> TopicPolicy:
        """The topic policy these settings describe."""
        return TopicPolicy(
            partitions=self.topic_partitions,
            replication=self.topic_replication,
            min_insync_replicas=self.topic_min_insync_replicas,
            changes_retention_ms=self.topic_changes_retention_ms,
            requests_retention_ms=self.topic_requests_retention_ms,
            jobs_retention_ms=self.topic_jobs_retention_ms,
            receipts_retention_ms=self.topic_receipts_retention_ms,
            deadletter_retention_ms=self.topic_deadletter_retention_ms,
        )


async def _retrying(wait_seconds: float, action: Callable[[], Awaitable[T]]) -> T:
    """Run `action`, retrying while the broker is not reachable yet."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return await action()
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise
            print(f"topics: broker not ready ({type(exc).__name__}), retrying", file=sys.stderr)
            await asyncio.sleep(2)


def print_drifts(drifts: list[topic_drift.Drift], stream: IO[str]) -> None:
    """One line per difference, with what `apply` would do about it."""
    for drift in drifts:
        if drift.setting == "partitions" and int(drift.actual) < int(drift.declared):
            hint = " (grown only with --add-partitions: per-key order breaks)"
        elif drift.setting == "partitions":
            hint = " (partitions cannot be removed: left alone)"
        elif drift.setting == "replication":
            hint = " (needs a partition reassignment: left alone)"
        else:
            hint = ""
        print(f"topics: {drift}{hint}", file=stream)


def main(argv: list[str] | None = None) -> int:
    """Entry point; 0 when done (or in sync with --check), 1 on error or drift, 2: bad settings."""
    parser = argparse.ArgumentParser(prog="python -m shared.plumbing.topics_cli")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for Kafka")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the declaration, touch nothing")
    mode.add_argument("--check", action="store_true", help="print differences; exit 1 if any")
    parser.add_argument(
        "--add-partitions",
        action="store_true",
        help="grow topics with fewer partitions than declared (breaks per-key order across it)",
    )
    args = parser.parse_args(argv)
    try:
        settings = TopicsInitSettings()  # type: ignore[call-arg]  # values come from env
    except ValidationError as exc:
        print(f"topics: invalid settings: {exc}", file=sys.stderr)
        return 2
    policy = settings.policy()
    configs = policy.configs(settings.topics)
    if args.dry_run:
        for name, config in configs.items():
            shown = ", ".join(f"{k}={v}" for k, v in sorted(config.items()))
            print(f"{name}: partitions={settings.topic_partitions} {shown}")
        return 0
    bootstrap, security = settings.kafka_bootstrap_servers, settings.kafka
    try:
        if args.check:
            drifts = asyncio.run(
                _retrying(
                    args.wait,
                    lambda: topic_drift.check(bootstrap, settings.topics, policy, security),
                )
            )
            print_drifts(drifts, sys.stdout)
            print(f"topics: {len(drifts)} difference(s) from the declaration")
            return 1 if drifts else 0
        applied = asyncio.run(
            _retrying(
                args.wait,
                lambda: topic_drift.apply(
                    bootstrap, settings.topics, policy, security, add_partitions=args.add_partitions
                ),
            )
        )
    except (KafkaError, OSError) as exc:
        print(f"topics: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for name in configs:
        done = "created" if name in applied.created else "exists"
        if name in applied.altered:
            done += f", altered {', '.join(applied.altered[name])}"
        if name in applied.grown:
            done += f", grown to {applied.grown[name]} partitions"
        print(f"topics: {name} {done}")
    print_drifts(applied.remaining, sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
