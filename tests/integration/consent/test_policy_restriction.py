"""Policy 5.4 (GDPR Art. 18) on real Kafka and PostgreSQL: a restriction stops contract purposes
in the decisions API, in `consent.state.v1` and in the client cache fed from it, except what
continues under Art. 18(2); a lift restores them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.consent.app import build_runtime
from services.consent.settings import ConsentSettings
from shared.consent_client import ConsentCache
from shared.contract.topics import Topics
from shared.plumbing.clock import ManualClock
from tests.integration.consent.test_policy_purposes import at, decision, last_state
from tests.support import events as make
from tests.support.infra import Infra
from tests.support.kafka import produce

pytestmark = pytest.mark.integration
TOKEN = "restriction-t0ken-for-tests"


@pytest.fixture
async def api(infra: Infra, topics: Topics, schema: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = ConsentSettings(
        kafka_bootstrap_servers=infra.kafka,
        database_url=infra.database_url,
        db_schema=schema,
        group_id=f"g-{schema}",
        topics=topics,
        api_token=TOKEN,
        ledger_key="ledger-test-key-restriction",
        batch_timeout_ms=20,
    )
    runtime = build_runtime(settings, ManualClock(at(60)))
    await runtime.start()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=runtime.asgi()),
            base_url="http://consent",
            headers=headers,
        ) as http:
            yield http
    finally:
        await runtime.stop()


async def test_a_restriction_stops_contract_purposes_except_what_continues_under_art_18_2(
    infra: Infra,
    topics: Topics,
    api: httpx.AsyncClient,
):
    subject = "usr_rs"
    assert (await decision(api, subject, "transactional_email"))["allowed"] is True
    restriction = make.restricted(
        subject, categories=["billing_records"], grounds="unlawful_erasure_opposed", at=at(1)
    )
    await produce(infra.kafka, topics.consent_changes, [restriction])
    state = await last_state(infra, topics, subject, 1)
    assert state.restrictions == ["billing_records"]
    email = state.purposes["transactional_email"]
    assert (email.allowed, email.restricted, email.basis) == (False, True, "contract")
    tax = state.purposes["legal_obligation_tax"]
    assert (tax.allowed, tax.restricted, tax.continues_under) == (
        True,
        True,
        ["storage", "legal_claims"],
    )
    answer = await decision(api, subject, "transactional_email")
    assert (answer["allowed"], answer["reason"]) == (False, "restricted: billing_records")
    answer = await decision(api, subject, "legal_obligation_tax")
    assert answer["allowed"] is True
    assert "continues under Art. 18(2): storage, legal_claims" in answer["reason"]
    assert (await decision(api, subject, "customer_support"))["allowed"] is True

    cache = ConsentCache()
    cache.apply(subject, state)
    assert cache.may_process(subject, "transactional_email") is False
    assert cache.may_process(subject, "legal_obligation_tax") is True

    await produce(
        infra.kafka,
        topics.consent_changes,
        [make.restriction_lifted(subject, categories=["billing_records"], at=at(2))],
    )
    lifted = await last_state(infra, topics, subject, 2)
    assert lifted.purposes["transactional_email"].allowed is True
    assert lifted.purposes["transactional_email"].restricted is False
    cache.apply(subject, lifted)
    assert cache.may_process(subject, "transactional_email") is True
    assert (await decision(api, subject, "transactional_email"))["allowed"] is True
