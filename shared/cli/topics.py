"""`topics`: create the contract's missing topics, or check / apply their declared policy."""

from __future__ import annotations

import dataclasses

import typer

from shared.cli.common import CliError, env, kafka_security, out, run, topics
from shared.plumbing import topic_drift
from shared.plumbing.kafka import ensure_topics
from shared.plumbing.topics_cli import TopicsInitSettings, print_drifts


def create_topics(
    partitions: int | None = typer.Option(None, help="Declared partitions [TOPIC_PARTITIONS, 6]"),
    replication: int | None = typer.Option(
        None, help="Declared replication factor [TOPIC_REPLICATION, 1]"
    ),
    check: bool = typer.Option(
        False, "--check", help="Print how the topics differ from the declaration; exit 1 if so."
    ),
    apply: bool = typer.Option(
        False, "--apply", help="Create missing topics and alter configs that differ."
    ),
    add_partitions: bool = typer.Option(
        False,
        "--add-partitions",
        help="With --apply: grow topics with fewer partitions than declared. Keys then hash to "
        "other partitions, so per-key order breaks across the change.",
    ),
) -> None:
    """Create every contract topic that is missing (compaction and retention per DESIGN §5).

    The declaration is the one topics-init uses (TOPIC_* variables: retention, partitions,
    replication, min.insync.replicas). A replication factor, or more partitions than declared,
    are reported and never changed.
    """
    bootstrap = env("KAFKA_BOOTSTRAP_SERVERS")
    policy = TopicsInitSettings(kafka_bootstrap_servers=bootstrap).policy()
    if partitions is not None:
        policy = dataclasses.replace(policy, partitions=partitions)
    if replication is not None:
        policy = dataclasses.replace(policy, replication=replication)
    if check and apply:
        run(_refuse("--check and --apply exclude each other"))
    if add_partitions and not apply:
        run(_refuse("--add-partitions needs --apply"))
    security = kafka_security()
    if check:
        drifts = run(topic_drift.check(bootstrap, topics(), policy, security))
        print_drifts(drifts, out.file)
        out.print(f"{len(drifts)} difference(s) from the declaration")
        if drifts:
            raise typer.Exit(1)
        return
    if apply:
        applied = run(
            topic_drift.apply(bootstrap, topics(), policy, security, add_partitions=add_partitions)
        )
        out.print(f"created {len(applied.created)} topic(s): {', '.join(applied.created) or '-'}")
        for name, settings in sorted(applied.altered.items()):
            out.print(f"altered {name}: {', '.join(settings)}")
        for name, count in sorted(applied.grown.items()):
            out.print(f"grew {name} to {count} partitions")
        print_drifts(applied.remaining, out.file)
        return
    created = run(ensure_topics(bootstrap, topics(), policy, security))
    out.print(f"created {len(created)} topic(s): {', '.join(created) or '(all existed)'}")


async def _refuse(message: str) -> None:
    raise CliError(message)
