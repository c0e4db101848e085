"""Policy 3.3 on real Kafka and PostgreSQL: a new policy is announced to every person before it
takes effect (notice jobs in bounded batches, each in the person's ledger), and from its
effective date the grants it asks to renew answer `reconsent_required`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from services.consent.app import build_runtime
from services.consent.settings import ConsentSettings
from shared.contract.codec import decode
from shared.contract.events import ConsentStateData, NoticeJob
from shared.contract.topics import Topics
from shared.plumbing.clock import ManualClock
from tests.integration.retention.harness import eventually
from tests.support import events as make
from tests.support.infra import Infra
from tests.support.kafka import produce, read_topic

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
EFFECTIVE = T0 + timedelta(days=30)
TOKEN = "n0tice-t0ken-for-tests"
OLD = [f"usr_old_{i}" for i in range(5)]


@dataclass
class Consent:
    http: httpx.AsyncClient
    clock: ManualClock
    schema: str
    infra: Infra

    async def decision(self, subject: str, purpose: str) -> dict[str, Any]:
        response = await self.http.get(
            f"/v1/subjects/{subject}/decisions", params={"purpose": purpose}
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def fetch(self, sql: str) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(
            self.infra.database_url, server_settings={"search_path": self.schema}
        )
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()


@pytest.fixture
async def consent(infra: Infra, topics: Topics, schema: str) -> AsyncIterator[Consent]:
    settings = ConsentSettings(
        kafka_bootstrap_servers=infra.kafka,
        database_url=infra.database_url,
        db_schema=schema,
        group_id=f"g-{schema}",
        topics=topics,
        api_token=TOKEN,
        ledger_key="ledger-test-key-notices",
        batch_timeout_ms=20,
        notice_batch=2,
        notice_interval_s=0.05,
    )
    clock = ManualClock(T0)
    runtime = build_runtime(settings, clock)
    await runtime.start()
    transport = httpx.ASGITransport(app=runtime.asgi())
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://consent", headers=headers
        ) as http:
            yield Consent(http, clock, schema, infra)
    finally:
        await runtime.stop()


async def test_a_policy_requiring_reconsent_notifies_everyone_first_then_asks_to_renew(
    infra: Infra, topics: Topics, consent: Consent
):
    grants = [
        make.granted(s, "analytics_providers", at=T0 - timedelta(days=9), policy_version="2026-10")
        for s in OLD
    ]
    fresh = make.granted(
        "usr_new", "analytics_providers", at=T0 - timedelta(days=1), policy_version="2027-01"
    )
    await produce(infra.kafka, topics.consent_changes, [*grants, fresh])
    await eventually(lambda: consent.fetch("SELECT 1 FROM subjects"), lambda r: len(r) == 6)
    before = await consent.decision(OLD[0], "analytics_providers")
    assert (before["allowed"], before["reconsent_required"]) == (True, False)

    policy = make.policy_published(
        "2027-01", effective_at=EFFECTIVE, reconsent=("analytics_providers",), at=T0
    )
    await produce(infra.kafka, topics.privacy_policies, [policy])  # kept, since 1.2.0

    def notices(records: list[Any]) -> list[NoticeJob]:
        events = [decode(r.value) for r in records if r.value is not None]
        return [e for e in events if isinstance(e, NoticeJob)]

    records = await read_topic(
        infra.kafka, topics.privacy_jobs, until=lambda rs: len(notices(rs)) >= 6
    )
    sent = {e.subject: e.data for e in notices(records)}
    assert set(sent) == {*OLD, "usr_new"}  # everyone, once
    assert len(notices(records)) == 6
    assert all(sent[s].reconsent_purposes == ["analytics_providers"] for s in OLD)
    assert sent["usr_new"].reconsent_purposes == []
    assert {(d.policy_version, d.effective_at, d.owner) for d in sent.values()} == {
        ("2027-01", EFFECTIVE, "messaging")
    }
    done = await consent.fetch("SELECT notices_done, notices_sent, notice_cursor FROM policies")
    assert (done[0]["notices_done"], done[0]["notices_sent"]) == (True, 6)
    history = await consent.http.get(f"/v1/subjects/{OLD[0]}/consent/history")
    lines = [e for e in history.json()["entries"] if e["kind"] == "notice"]
    assert len(lines) == 1
    assert lines[0]["policy_version"] == "2027-01"
    assert lines[0]["event_id"] == sent[OLD[0]].job_id
    chain = (await consent.http.get(f"/v1/subjects/{OLD[0]}/consent/history/verify")).json()
    assert chain["ok"], chain
    # before the effective date nothing changes
    still = await consent.decision(OLD[0], "analytics_providers")
    assert (still["allowed"], still["reconsent_required"]) == (True, False)

    consent.clock.set(EFFECTIVE)
    after = await eventually(
        lambda: consent.decision(OLD[0], "analytics_providers"),
        lambda d: d["reconsent_required"],
    )
    assert (after["allowed"], after["reconsent_required"]) == (False, True)
    renewed = await consent.decision("usr_new", "analytics_providers")
    assert (renewed["allowed"], renewed["reconsent_required"]) == (True, False)

    def states(records: list[Any], subject: str) -> list[ConsentStateData]:
        found = []
        for r in records:
            if r.key == subject.encode() and r.value is not None:
                data = decode(r.value).data
                assert isinstance(data, ConsentStateData)
                found.append(data)
        return found

    published = await read_topic(
        infra.kafka,
        topics.consent_state,
        until=lambda rs: all(len(states(rs, s)) >= 2 for s in OLD),
    )
    for s in OLD:
        latest = states(published, s)[-1]
        assert latest.purposes["analytics_providers"].reconsent_required, s
        assert not latest.purposes["analytics_providers"].allowed
    assert len(states(published, "usr_new")) == 1  # not affected: not re-published
