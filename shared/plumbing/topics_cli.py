"""Create every contract topic (DESIGN §3) with the policy given by environment variables.

Used by docker compose (`topics-init`) and `deploy/local/run`:

    python -m shared.plumbing.topics_cli [--wait SECONDS] [--dry-run]

Environment (all optional except the bootstrap servers):
    KAFKA_BOOTSTRAP_SERVERS                  host:port[,host:port]
    KAFKA__SECURITY_PROTOCOL, KAFKA__SASL_*  as the services (TLS, SASL/SCRAM)
    TOPICS__<NAME>                           a topic name override, e.g. TOPICS__CONSENT_STATE
    TOPIC_PARTITIONS, TOPIC_REPLICATION      default 6 and 1 (a three-broker cluster: 3)
    TOPIC_MIN_INSYNC_REPLICAS                default: the broker's (a three-broker cluster: 2)
    TOPIC_REQUESTS_RETENTION_MS, TOPIC_JOBS_RETENTION_MS, TOPIC_RECEIPTS_RETENTION_MS,
    TOPIC_DEADLETTER_RETENTION_MS            bounded retention (defaults: 90, 90, 90, 14 days)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.contract.topics import Topics
from shared.plumbing.kafka import TopicPolicy, ensure_topics
from shared.plumbing.settings import KafkaSecurity

_DEFAULTS = TopicPolicy()


class TopicsInitSettings(BaseSettings):
    """What the topic initialiser reads from the environment."""

    model_config = SettingsConfigDict(extra="ignore", env_nested_delimiter="__")

    kafka_bootstrap_servers: str = Field(description="host:port[,host:port]")
    kafka: KafkaSecurity = KafkaSecurity()
    topics: Topics = Topics()
    topic_partitions: int = Field(_DEFAULTS.partitions, ge=1)
    topic_replication: int = Field(_DEFAULTS.replication, ge=1)
    topic_min_insync_replicas: int | None = Field(_DEFAULTS.min_insync_replicas, ge=1)
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
            requests_retention_ms=self.topic_requests_retention_ms,
            jobs_retention_ms=self.topic_jobs_retention_ms,
            receipts_retention_ms=self.topic_receipts_retention_ms,
            deadletter_retention_ms=self.topic_deadletter_retention_ms,
        )


async def create_topics(settings: TopicsInitSettings, wait_seconds: float) -> list[str]:
    """Create the missing topics, retrying while the broker is not reachable yet."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return await ensure_topics(
                settings.kafka_bootstrap_servers, settings.topics, settings.policy(), settings.kafka
            )
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise
            print(f"topics: broker not ready ({type(exc).__name__}), retrying", file=sys.stderr)
            await asyncio.sleep(2)


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit code 0 when every topic exists, 1 on error, 2 on bad settings."""
    parser = argparse.ArgumentParser(prog="python -m shared.plumbing.topics_cli")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for Kafka")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, create nothing")
    args = parser.parse_args(argv)
    try:
        settings = TopicsInitSettings()  # type: ignore[call-arg]  # values come from env
    except ValidationError as exc:
        print(f"topics: invalid settings: {exc}", file=sys.stderr)
        return 2
    configs = settings.policy().configs(settings.topics)
    if args.dry_run:
        for name, config in configs.items():
            shown = ", ".join(f"{k}={v}" for k, v in sorted(config.items()))
            print(f"{name}: partitions={settings.topic_partitions} {shown}")
        return 0
    try:
        created = asyncio.run(create_topics(settings, args.wait))
    except (KafkaError, OSError) as exc:
        print(f"topics: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for name in configs:
        print(f"topics: {name} {'created' if name in created else 'exists'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
