"""Topics follow their declaration on real Kafka: `topics --check` reports, `--apply` fixes."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from typer.testing import CliRunner

from shared.cli import app
from shared.contract.topics import Topics
from shared.plumbing import topics_cli
from shared.plumbing.kafka import DAY_MS
from shared.plumbing.topic_drift import Actual, describe

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_env(infra, topics, monkeypatch):
    prefix = topics.accounts_lifecycle.removesuffix("accounts.lifecycle")
    monkeypatch.setenv("PP_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("PP_KAFKA_BOOTSTRAP_SERVERS", infra.kafka)
    for name in ("TOPIC_PARTITIONS", "TOPIC_REPLICATION", "TOPIC_REQUESTS_RETENTION_MS"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


async def actual(kafka: str, name: str) -> Actual:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        return (await describe(admin, [name]))[name]
    finally:
        await admin.close()


async def alter(kafka: str, name: str, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs)])
    finally:
        await admin.close()


async def settle(kafka: str, name: str, key: str, value: str) -> None:
    for _ in range(100):
        if (await actual(kafka, name)).configs.get(key) == value:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name}: {key} never became {value}")


def test_a_wrong_retention_is_reported_then_fixed_keeping_other_overrides(
    cli_env: CliRunner, topics: Topics, infra
) -> None:
    requests = topics.privacy_requests
    asyncio.run(
        alter(infra.kafka, requests, {"retention.ms": "1000", "max.message.bytes": "2000000"})
    )
    asyncio.run(settle(infra.kafka, requests, "retention.ms", "1000"))

    checked = cli_env.invoke(app, ["topics", "--check", "--partitions", "3"])
    assert checked.exit_code == 1, checked.output
    assert f"{requests}: retention.ms is 1000, declared {90 * DAY_MS}" in checked.output
    assert "1 difference(s)" in checked.output

    applied = cli_env.invoke(app, ["topics", "--apply", "--partitions", "3"])
    assert applied.exit_code == 0, applied.output
    assert f"altered {requests}: retention.ms" in applied.output
    after = asyncio.run(actual(infra.kafka, requests))
    assert after.configs["retention.ms"] == str(90 * DAY_MS)
    assert after.configs["max.message.bytes"] == "2000000"  # an operator's override stays

    again = cli_env.invoke(app, ["topics", "--check", "--partitions", "3"])
    assert again.exit_code == 0, again.output
    assert "0 difference(s)" in again.output


def test_too_few_partitions_are_reported_and_grown_only_with_the_flag(
    cli_env: CliRunner, topics: Topics, infra
) -> None:
    checked = cli_env.invoke(app, ["topics", "--check", "--partitions", "4"])
    assert checked.exit_code == 1
    assert f"{topics.consent_state}: partitions is 3, declared 4" in checked.output
    assert "--add-partitions" in checked.output

    applied = cli_env.invoke(app, ["topics", "--apply", "--partitions", "4"])
    assert applied.exit_code == 0, applied.output
    assert asyncio.run(actual(infra.kafka, topics.consent_state)).partitions == 3
    assert f"{topics.consent_state}: partitions is 3, declared 4" in applied.output

    alone = cli_env.invoke(app, ["topics", "--add-partitions", "--partitions", "4"])
    assert alone.exit_code == 2
    assert "--add-partitions needs --apply" in alone.output

    grown = cli_env.invoke(app, ["topics", "--apply", "--add-partitions", "--partitions", "4"])
    assert grown.exit_code == 0, grown.output
    assert f"grew {topics.consent_state} to 4 partitions" in grown.output
    assert asyncio.run(actual(infra.kafka, topics.consent_state)).partitions == 4
    assert cli_env.invoke(app, ["topics", "--check", "--partitions", "4"]).exit_code == 0

    fewer = cli_env.invoke(app, ["topics", "--check", "--partitions", "2"])
    assert fewer.exit_code == 1
    assert "cannot be removed" in fewer.output


def test_topics_init_applies_configs_and_creates_what_is_missing(
    topics: Topics, infra, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", infra.kafka)
    monkeypatch.setenv("TOPIC_PARTITIONS", "3")
    for field, name in topics.model_dump().items():
        monkeypatch.setenv(f"TOPICS__{field.upper()}", name)
    monkeypatch.setenv("TOPIC_DEADLETTER_RETENTION_MS", str(DAY_MS))
    asyncio.run(_delete(infra.kafka, topics.privacy_receipts))

    assert topics_cli.main(["--check", "--wait", "0"]) == 1
    out = capsys.readouterr().out
    assert f"{topics.privacy_receipts}: topic is (missing), declared present" in out
    assert f"{topics.deadletter}: retention.ms is {14 * DAY_MS}, declared {DAY_MS}" in out

    assert topics_cli.main(["--wait", "0"]) == 0
    out = capsys.readouterr().out
    assert f"topics: {topics.privacy_receipts} created" in out
    assert f"topics: {topics.deadletter} exists, altered retention.ms" in out
    assert topics_cli.main(["--check", "--wait", "0"]) == 0


async def _delete(kafka: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.delete_topics([name])
        for _ in range(100):
            if name not in await admin.list_topics():
                return
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
