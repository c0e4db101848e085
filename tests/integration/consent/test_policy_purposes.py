"""Policy 2.2 on real Kafka and PostgreSQL: platform improvement is a legitimate interest a
person can object to (GPC leaves it alone), and the purposes the retention rules name are known
and necessary (contract, legal obligation: always allowed, never withdrawn)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.consent.app import build_runtime
from services.consent.settings import ConsentSettings
from shared.contract.codec import decode
from shared.contract.events import ConsentStateData
from shared.contract.topics import Topics
from shared.plumbing.clock import ManualClock
from tests.support import events as make
from tests.support.infra import Infra
from tests.support.kafka import produce, read_topic

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
TOKEN = "policy-token-0123456789"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
async def api(infra: Infra, topics: Topics, schema: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = ConsentSettings(
        kafka_bootstrap_servers=infra.kafka,
        database_url=infra.database_url,
        db_schema=schema,
        group_id=f"g-{schema}",
        topics=topics,
        api_token=TOKEN,
        ledger_key="ledger-test-key-0123",
        batch_timeout_ms=20,
    )
    runtime = build_runtime(settings, ManualClock(at(60)))
    await runtime.start()
    transport = httpx.ASGITransport(app=runtime.asgi())
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://consent", headers=headers
        ) as http:
            yield http
    finally:
        await runtime.stop()


async def decision(http: httpx.AsyncClient, subject: str, purpose: str) -> dict[str, Any]:
    response = await http.get(f"/v1/subjects/{subject}/decisions", params={"purpose": purpose})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def last_state(infra: Infra, topics: Topics, subject: str, count: int) -> ConsentStateData:
    def mine(records: list[Any]) -> list[Any]:
        return [r for r in records if r.key == subject.encode() and r.value is not None]

    records = await read_topic(
        infra.kafka, topics.consent_state, until=lambda rs: len(mine(rs)) >= count
    )
    data = decode(mine(records)[-1].value).data
    assert isinstance(data, ConsentStateData)
    return data


async def test_an_objection_blocks_platform_improvement_and_gpc_does_not(
    infra: Infra, topics: Topics, api: httpx.AsyncClient
):
    objector, gpc_user = "usr_pi_obj", "usr_pi_gpc"
    assert (await decision(api, objector, "platform_improvement"))["allowed"] is True
    await produce(
        infra.kafka,
        topics.consent_changes,
        [
            make.objected(objector, purposes=["platform_improvement"], at=at(1)),
            make.gpc(gpc_user, at=at(1)),
        ],
    )
    objected = await last_state(infra, topics, objector, 1)
    assert objected.purposes["platform_improvement"].allowed is False
    assert objected.purposes["platform_improvement"].basis == "legitimate_interest"
    answer = await decision(api, objector, "platform_improvement")
    assert answer["allowed"] is False
    assert answer["basis"] == "legitimate_interest"

    signalled = await last_state(infra, topics, gpc_user, 1)
    assert signalled.gpc is True
    assert signalled.purposes["platform_improvement"].allowed is True
    assert signalled.purposes["partner_marketing"].allowed is False
    assert (await decision(api, gpc_user, "platform_improvement"))["allowed"] is True


async def test_the_retention_rules_purposes_are_known_always_allowed_and_not_withdrawable(
    infra: Infra, topics: Topics, api: httpx.AsyncClient
):
    subject = "usr_pi_tax"
    refused = make.withdrawn(subject, "legal_obligation_tax", at=at(1))
    later = make.granted(subject, "marketing_email", at=at(2))
    await produce(infra.kafka, topics.consent_changes, [refused, later])
    state = await last_state(infra, topics, subject, 1)
    assert state.purposes["legal_obligation_tax"].allowed is True
    assert state.purposes["legal_obligation_tax"].basis == "contract"  # v1's word for it
    dead = await read_topic(
        infra.kafka,
        topics.deadletter,
        until=lambda rs: any(refused.id.encode() in (r.value or b"") for r in rs),
    )
    [mine] = [r for r in dead if refused.id.encode() in (r.value or b"")]
    assert "legal_obligation basis" in dict(mine.headers)["error"].decode()
    expected = {
        "contract_performance": "contract",
        "customer_support": "contract",
        "legal_obligation_tax": "legal_obligation",
    }
    for purpose, basis in expected.items():
        answer = await decision(api, subject, purpose)
        assert (answer["allowed"], answer["basis"]) == (True, basis), purpose
