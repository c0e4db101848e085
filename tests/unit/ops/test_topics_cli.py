"""The topic initialiser's settings come from the environment (compose and deploy/local/run)."""

from __future__ import annotations

import pytest

from shared.contract.topics import Topics
from shared.plumbing.kafka import DAY_MS, TopicPolicy
from shared.plumbing.topic_drift import Actual, compare
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
    assert len(lines) == 11  # 1.2.0: privacy.policies and privacy.audit
    assert any(
        line.startswith("consent.state: ") and "cleanup.policy=compact" in line for line in lines
    )
    assert any(line.startswith("legal.holds: ") and "retention.ms=-1" in line for line in lines)
    assert any(
        line.startswith("privacy.policies: ") and "retention.ms=-1" in line for line in lines
    )
    assert any(
        line.startswith("consent.changes: ") and f"retention.ms={35 * DAY_MS}" in line
        for line in lines
    )
    assert any(line.startswith("privacy.audit: ") and "retention.ms=-1" in line for line in lines)


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


def test_min_insync_replicas_follows_replication_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert [TopicPolicy(replication=r).min_isr for r in (1, 2, 3, 5)] == [1, 1, 2, 2]
    monkeypatch.setenv("TOPIC_REPLICATION", "3")
    configs = TopicsInitSettings().policy().configs(Topics())  # type: ignore[call-arg]
    assert {c["min.insync.replicas"] for c in configs.values()} == {"2"}
    monkeypatch.setenv("TOPIC_MIN_INSYNC_REPLICAS", "3")
    configs = TopicsInitSettings().policy().configs(Topics())  # type: ignore[call-arg]
    assert {c["min.insync.replicas"] for c in configs.values()} == {"3"}


def test_compare_names_each_difference_and_what_apply_may_fix() -> None:
    policy = TopicPolicy(partitions=6, replication=1)
    declared = policy.configs(Topics())
    state = Topics().consent_state
    actual = {
        name: Actual(6, 1, dict(configs), {}) for name, configs in declared.items() if name != state
    }
    requests = Topics().privacy_requests
    actual[requests] = Actual(
        4, 2, {**declared[requests], "retention.ms": "1000", "cleanup.policy": "delete"}, {}
    )
    drifts = sorted(compare(declared, policy, actual), key=lambda d: d.topic)
    assert [str(d) for d in drifts] == [
        f"{state}: topic is (missing), declared present",
        f"{requests}: partitions is 4, declared 6",
        f"{requests}: replication is 2, declared 1",
        f"{requests}: retention.ms is 1000, declared {90 * DAY_MS}",
    ]
    assert [d.alterable for d in drifts] == [True, False, False, True]
    # cleanup.policy is a set: the broker's order is no difference.
    both = TopicPolicy()
    mixed = {name: Actual(6, 1, dict(c), {}) for name, c in both.configs(Topics()).items()}
    mixed[state].configs["cleanup.policy"] = "compact"
    assert compare(both.configs(Topics()), both, mixed) == []


def test_check_and_dry_run_exclude_each_other() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--check", "--dry-run"])
    assert exited.value.code == 2


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
