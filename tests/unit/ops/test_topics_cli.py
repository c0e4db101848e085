"""The topic initialiser's settings come from the environment (compose and deploy/local/run)."""

from __future__ import annotations

import pytest

from shared.plumbing.kafka import DAY_MS, TopicPolicy
from shared.plumbing.topics_cli import TopicsInitSettings, main


@pytest.fixture(autouse=True)
def bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")


def test_defaults_are_the_shared_topic_policy() -> None:
    assert TopicsInitSettings().policy() == TopicPolicy()  # type: ignore[call-arg]


def test_policy_and_topic_names_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOPIC_PARTITIONS", "12")
    monkeypatch.setenv("TOPIC_REPLICATION", "3")
    monkeypatch.setenv("TOPIC_DEADLETTER_RETENTION_MS", str(3 * DAY_MS))
    monkeypatch.setenv("TOPICS__CONSENT_STATE", "acme.consent.state")
    monkeypatch.setenv("KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    settings = TopicsInitSettings()  # type: ignore[call-arg]
    policy = settings.policy()
    assert (policy.partitions, policy.replication) == (12, 3)
    configs = policy.configs(settings.topics)
    assert configs["acme.consent.state"]["cleanup.policy"] == "compact"
    assert configs["privacy.deadletter"]["retention.ms"] == str(3 * DAY_MS)
    assert settings.kafka.security_protocol == "SASL_SSL"


def test_dry_run_prints_every_topic_with_its_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 9
    assert any(
        line.startswith("consent.state: ") and "cleanup.policy=compact" in line for line in lines
    )
    assert any(line.startswith("legal.holds: ") and "retention.ms=-1" in line for line in lines)


def test_invalid_settings_exit_with_code_two(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOPIC_PARTITIONS", "0")
    assert main(["--dry-run"]) == 2
    assert "topic_partitions" in capsys.readouterr().err


def test_unreachable_broker_fails_after_the_wait(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    assert main(["--wait", "0"]) == 1
    assert "topics: failed" in capsys.readouterr().err


def test_min_insync_replicas_comes_from_the_environment_onto_every_topic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOPIC_REPLICATION", "3")
    monkeypatch.setenv("TOPIC_MIN_INSYNC_REPLICAS", "2")
    settings = TopicsInitSettings()  # type: ignore[call-arg]
    configs = settings.policy().configs(settings.topics)
    assert {config["min.insync.replicas"] for config in configs.values()} == {"2"}


def test_unset_or_empty_min_insync_replicas_leaves_the_broker_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for value in (None, ""):
        if value is not None:
            monkeypatch.setenv("TOPIC_MIN_INSYNC_REPLICAS", value)
        settings = TopicsInitSettings()  # type: ignore[call-arg]
        configs = settings.policy().configs(settings.topics)
        assert all("min.insync.replicas" not in config for config in configs.values())


def test_min_insync_replicas_above_the_replication_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOPIC_REPLICATION", "1")
    monkeypatch.setenv("TOPIC_MIN_INSYNC_REPLICAS", "2")
    assert main(["--dry-run"]) == 2
    assert "topic_min_insync_replicas" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"min\.insync\.replicas"):
        TopicPolicy(replication=1, min_insync_replicas=2)


def test_consent_state_keeps_tombstones_seven_days_after_compaction() -> None:
    configs = TopicPolicy().configs(TopicsInitSettings().topics)  # type: ignore[call-arg]
    assert configs["consent.state"]["delete.retention.ms"] == str(7 * DAY_MS)
    assert all(
        "delete.retention.ms" not in config
        for name, config in configs.items()
        if name != "consent.state"
    )
