"""The operator CLI against real Kafka: publish (validated), holds, dead letters."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from shared.cli import app
from shared.contract.codec import decode
from shared.contract.events import LegalHoldPlaced
from tests.support.kafka import read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_env(infra, topics, monkeypatch):
    prefix = topics.accounts_lifecycle.removesuffix("accounts.lifecycle")
    monkeypatch.setenv("PP_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("PP_KAFKA_BOOTSTRAP_SERVERS", infra.kafka)
    return CliRunner()


def test_publish_validates_before_sending_and_reports_the_field(cli_env, topics, infra):
    bad = cli_env.invoke(
        app,
        [
            "publish",
            "--type",
            "consent.granted.v1",
            "--subject",
            "usr_1",
            "--data",
            '{"purpose": "x"}',
        ],
    )
    assert bad.exit_code == 2
    assert "invalid consent.granted.v1: data.source" in bad.output
    unknown = cli_env.invoke(app, ["publish", "--type", "consent.granted.v7", "--subject", "u"])
    assert unknown.exit_code == 2
    assert "unknown event type 'consent.granted.v7'" in unknown.output
    data = json.dumps({"purpose": "marketing_email", "source": "api"})
    good = cli_env.invoke(
        app, ["publish", "--type", "consent.granted.v1", "--subject", "usr_1", "--data", data]
    )
    assert good.exit_code == 0, good.output
    records = asyncio.run(read_topic(infra.kafka, topics.consent_changes))
    assert [(r.key, decode(r.value).type) for r in records] == [(b"usr_1", "consent.granted.v1")]


def test_an_event_over_the_broker_limit_is_refused_with_a_clear_error(cli_env, tmp_path):
    event = {
        "type": "consent.granted.v1",
        "subject": "usr_2",
        "data": {
            "purpose": "marketing_email",
            "source": "api",
            "notice_id": "n",
            "blob": "x" * 2_000_000,
        },
    }
    path = tmp_path / "big.json"
    path.write_text(json.dumps(event))
    result = cli_env.invoke(app, ["publish", str(path)])
    assert result.exit_code == 2
    # contract 1.2.0 bounds unknown fields (16 KiB), so the model refuses it before the broker
    assert "too large consent.granted.v1: data: unknown fields" in result.output
    assert "16384" in result.output


def test_an_event_encoded_over_max_event_bytes_stops_the_batch_before_anything_is_sent(
    cli_env, topics, infra, tmp_path
):
    """Every field within its bound, the record (about 600 KB) over the consumers' 512 KiB but
    under the broker's 1 MiB: the broker would take it and every service dead-letter it."""
    closed = {
        "type": "account.closed.v1",
        "subject": "usr_9",
        "data": {"account_id": "acc_9", "closed_at": "2026-11-26T10:00:00Z"},
    }
    consent = {"purpose": "marketing_email", "granted": True, "note": "n" * 15_000}
    big = {
        "type": "account.signed_up.v1",
        "subject": "usr_9",
        "data": {
            "account_id": "acc_9",
            "jurisdiction": "DE",
            "policy_version": "2026-10",
            "consents": [consent] * 40,  # 16 KiB of unknown fields per item is allowed
        },
    }
    path = tmp_path / "batch.json"
    path.write_text(json.dumps([closed, big]))
    refused = cli_env.invoke(app, ["publish", str(path)])
    assert refused.exit_code == 2, refused.output
    line = " ".join(refused.output.split())  # rich wraps it on the terminal
    assert "account.signed_up.v1" in line
    assert "over the limit of 524288 (MAX_EVENT_BYTES); nothing was sent" in line
    size = int(line.split("the encoded event is ")[1].split(" bytes")[0])
    assert 524_288 < size < 1_000_000

    path.write_text(json.dumps({**closed, "id": "after"}))
    assert cli_env.invoke(app, ["publish", str(path)]).exit_code == 0
    # same key, same partition: the refused batch's first event would come before this one
    records = asyncio.run(
        read_topic(
            infra.kafka,
            topics.accounts_lifecycle,
            until=lambda got: any(decode(r.value).id == "after" for r in got),
        )
    )
    assert [decode(r.value).id for r in records] == ["after"]


def test_holds_are_published_keyed_by_their_subject_or_account(cli_env, topics, infra):
    placed = cli_env.invoke(
        app,
        [
            "hold",
            "place",
            "h1",
            "--account",
            "acc_7",
            "--reason",
            "subpoena",
            "--category",
            "crm_data",
        ],
    )
    assert placed.exit_code == 0, placed.output
    both = cli_env.invoke(app, ["hold", "release", "h1", "--account", "a", "--subject", "s"])
    assert both.exit_code == 2
    records = asyncio.run(read_topic(infra.kafka, topics.legal_holds))
    event = decode(records[0].value)
    assert isinstance(event, LegalHoldPlaced)
    assert records[0].key == b"acc_7"
    assert event.data.scope == "account"
    assert event.data.categories == ["crm_data"]


def test_dead_letters_are_listed_shown_and_replayed_to_their_topic(cli_env, topics, infra):
    headers = [
        ("original_topic", topics.consent_changes.encode()),
        ("original_partition", b"0"),
        ("original_offset", b"7"),
        ("service", b"consent"),
        ("error", b"invalid consent.granted.v1: data.source"),
    ]

    async def seed():
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=infra.kafka)
        await producer.start()
        await producer.send_and_wait(
            topics.deadletter, b'{"broken": true}', key=b"usr_5", headers=headers
        )
        await producer.stop()

    asyncio.run(seed())
    listed = cli_env.invoke(app, ["dlq", "list"])
    assert listed.exit_code == 0, listed.output
    assert "1 dead-lettered message(s)" in listed.output
    position = next(
        line.split()[1]
        for line in listed.output.splitlines()
        if ":" in line and "│" in line and "consent" in line
    )
    shown = cli_env.invoke(app, ["dlq", "show", position])
    assert '"broken": true' in shown.output
    assert cli_env.invoke(app, ["dlq", "show", "9:999"]).exit_code == 1
    replayed = cli_env.invoke(app, ["dlq", "replay"])
    assert "replayed 1 message(s)" in replayed.output
    back = asyncio.run(read_topic(infra.kafka, topics.consent_changes))
    assert [(r.key, r.value) for r in back] == [(b"usr_5", b'{"broken": true}')]


def test_api_commands_explain_an_unreachable_service(cli_env, monkeypatch):
    monkeypatch.setenv("PP_API_TOKEN", "t")
    monkeypatch.setenv("PP_RETENTION_URL", "http://127.0.0.1:9")
    result = cli_env.invoke(app, ["overdue"])
    assert result.exit_code == 2
    assert "retention at http://127.0.0.1:9 is not answering" in result.output


def test_published_events_are_structured_mode_records(cli_env, topics, infra):
    data = json.dumps({"purpose": "marketing_email", "source": "api"})
    good = cli_env.invoke(
        app, ["publish", "--type", "consent.granted.v1", "--subject", "usr_3", "--data", data]
    )
    assert good.exit_code == 0, good.output
    (record,) = asyncio.run(read_topic(infra.kafka, topics.consent_changes))
    assert record.headers == (("content-type", b"application/cloudevents+json; charset=UTF-8"),)


def test_replay_restores_a_binary_mode_event_with_its_own_headers_only(cli_env, topics, infra):
    original = [("ce_specversion", b"1.0"), ("ce_type", b"made.up.v1"), ("ce_id", b"e1")]
    diagnostic = [
        ("original_topic", topics.consent_changes.encode()),
        ("original_partition", b"1"),
        ("original_offset", b"3"),
        ("service", b"retention"),
        ("error", b"unknown event type 'made.up.v1'"),
    ]

    async def seed():
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=infra.kafka)
        await producer.start()
        for service in (b"retention", b"export"):
            headers = [*original, *diagnostic[:3], ("service", service), diagnostic[4]]
            await producer.send_and_wait(topics.deadletter, b'{"n": 1}', key=b"k", headers=headers)
        await producer.stop()

    asyncio.run(seed())
    listed = cli_env.invoke(app, ["dlq", "list", "--service", "export"])
    assert "1 dead-lettered message(s)" in listed.output, listed.output
    replayed = cli_env.invoke(app, ["dlq", "replay", "--service", "retention"])
    assert "replayed 1 message(s)" in replayed.output, replayed.output
    (record,) = asyncio.run(read_topic(infra.kafka, topics.consent_changes, settle=1.0))
    assert (record.key, record.value, list(record.headers)) == (b"k", b'{"n": 1}', original)
