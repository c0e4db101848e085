"""`topics`: create the contract's topics that are missing."""

from __future__ import annotations

import typer

from shared.cli.common import env, out, run, topics
from shared.plumbing.kafka import TopicPolicy, ensure_topics
from shared.plumbing.settings import KafkaSecurity


def create_topics(partitions: int = typer.Option(6), replication: int = typer.Option(1)) -> None:
    """Create every contract topic that is missing (compaction and retention per DESIGN §5)."""
    policy = TopicPolicy(partitions=partitions, replication=replication)
    created = run(ensure_topics(env("KAFKA_BOOTSTRAP_SERVERS"), topics(), policy, KafkaSecurity()))
    out.print(f"created {len(created)} topic(s): {', '.join(created) or '(all existed)'}")
