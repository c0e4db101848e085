"""The consent service on real Kafka and PostgreSQL publishes signed checkpoints to
privacy.audit (on demand here; the loop does it every interval), and `privacy-plane
verify-ledger` reads them from the topic, not from the database: the ledger verifies, and a
consistent rewrite by a superuser afterwards is named."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from services.consent.app import build_runtime
from services.consent.settings import ConsentSettings
from shared.cli import app
from shared.contract.topics import Topics
from shared.evidence.signing import Signer, generate_seed
from shared.plumbing.clock import ManualClock
from shared.plumbing.kafka import TopicPolicy, ensure_topics
from tests.db.evidence.test_ledger_tamper import rewrite_withdrawal_as_grant
from tests.support import events as make
from tests.support.infra import Infra
from tests.support.kafka import produce, read_topic

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
TOKEN = "c0nsent-t0ken-for-tests"


@dataclass
class Running:
    settings: ConsentSettings
    http: httpx.AsyncClient
    public_key: str
    prefix: str


@pytest.fixture
async def running(infra: Infra, tmp_path: Path) -> AsyncIterator[Running]:
    test_id = uuid.uuid4().hex[:10]
    prefix = f"t{test_id}."
    topics = Topics().with_prefix(prefix)
    await ensure_topics(infra.kafka, topics, TopicPolicy(partitions=3))
    key_file = tmp_path / "checkpoint.key"
    key_file.write_text(generate_seed())
    settings = ConsentSettings(
        kafka_bootstrap_servers=infra.kafka,
        database_url=infra.database_url,
        db_schema=f"t_{test_id}",
        group_id=f"g-{test_id}",
        topics=topics,
        api_token=TOKEN,
        ledger_key="ledger-test-key-0123",
        batch_timeout_ms=20,
        checkpoint_key_file=key_file,
        checkpoint_interval_s=3600,  # on demand only: the test says when
    )
    runtime = build_runtime(settings, ManualClock(T0))
    await runtime.start()
    transport = httpx.ASGITransport(app=runtime.asgi())
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://consent", headers=headers
        ) as http:
            yield Running(settings, http, Signer.from_file(key_file).public, prefix)
    finally:
        await runtime.stop()
        db = await asyncpg.connect(infra.database_url)
        await db.execute(f'DROP SCHEMA IF EXISTS "{settings.db_schema}" CASCADE')
        await db.close()


async def verify_ledger(infra: Infra, r: Running) -> Any:
    env = {
        "PP_DATABASE_URL": infra.database_url,
        "PP_KAFKA_BOOTSTRAP_SERVERS": infra.kafka,
        "PP_TOPIC_PREFIX": r.prefix,
    }
    argv = ["verify-ledger", "--schema", r.settings.db_schema, "--public-key", r.public_key]
    return await asyncio.to_thread(CliRunner().invoke, app, argv, env=env)


async def test_checkpoints_go_out_on_privacy_audit_and_anchor_verification(
    infra: Infra, running: Running
) -> None:
    topics = running.settings.topics
    events = [
        make.granted("usr_a", at=T0),
        make.withdrawn("usr_a", at=T0 + timedelta(minutes=1)),
        make.granted("usr_b", at=T0 + timedelta(minutes=2)),
    ]
    await produce(infra.kafka, topics.consent_changes, events)
    made: dict[str, Any] = {"made": False}
    for _ in range(200):  # until the pipeline has written all three lines
        response = await running.http.post("/v1/checkpoints")
        assert response.status_code == 200, response.text
        if response.json()["made"]:
            made = response.json()
            if made["upto_seq"] >= 3:
                break
        await asyncio.sleep(0.05)
    assert made["upto_seq"] == 3
    records = await read_topic(
        infra.kafka,
        topics.privacy_audit,
        until=lambda rs: any(b'"upto_seq":3' in r.value for r in rs),
    )
    assert all(r.key == b"consent.ledger" for r in records)

    result = await verify_ledger(infra, running)
    assert result.exit_code == 0, result.output
    assert "3 under signed checkpoints" in " ".join(result.output.split())
    answer = (await running.http.get("/v1/checkpoints/verify")).json()
    assert (answer["ok"], answer["covered"]) == (True, 3)

    conn = await asyncpg.connect(infra.database_url)
    try:
        await conn.execute(f'SET search_path TO "{running.settings.db_schema}"')
        principal = await conn.fetchval("SELECT principal FROM ledger WHERE subject_id = 'usr_a'")
        await rewrite_withdrawal_as_grant(conn, principal)
    finally:
        await conn.close()
    result = await verify_ledger(infra, running)
    assert result.exit_code == 1, result.output
    assert "subject usr_a entry 2 " in " ".join(result.output.split())
    answer = (await running.http.get("/v1/checkpoints/verify")).json()
    assert answer["ok"] is False
    assert answer["bad_entry"].startswith("subject usr_a entry 2 ")
