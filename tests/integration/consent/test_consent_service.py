"""The consent service on real Kafka and PostgreSQL: one running service shared by the module.

Each test uses its own subjects; the last one rebuilds the projection from every topic the
module wrote to and compares it with the live one.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import yaml

from services.consent import ledger, store
from services.consent.app import build_runtime
from services.consent.rebuild import RebuildError, rebuild
from services.consent.settings import ConsentSettings
from shared.catalogue import PURPOSES_FILE
from shared.consent_client import Decision, DecisionError, DecisionsClient
from shared.contract import sealing
from shared.contract.codec import decode, new_event
from shared.contract.envelope import CloudEvent
from shared.contract.events import (
    AccountSignedUp,
    ConsentGranted,
    ConsentStateData,
    ConsentWithdrawn,
    Evidence,
    ExportJob,
    ExportJobData,
    ExportPart,
    GpcSignal,
)
from shared.contract.topics import Topics
from shared.plumbing.clock import ManualClock
from shared.plumbing.kafka import TopicPolicy, ensure_topics
from shared.plumbing.service import Runtime
from tests.support import events as make
from tests.support.infra import Infra
from tests.support.kafka import produce, read_topic

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
TOKEN = "c0nsent-t0ken-for-tests"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@dataclass
class Service:
    infra: Infra
    topics: Topics
    settings: ConsentSettings
    clock: ManualClock
    runtime: Runtime[Any]
    http: httpx.AsyncClient
    db: asyncpg.Connection

    @property
    def schema(self) -> str:
        return self.settings.db_schema

    async def send(self, topic: str, *events: CloudEvent[Any]) -> None:
        await produce(self.infra.kafka, topic, events)

    async def poll(self, query: str, *args: Any, until: Callable[[Any], bool], within: float = 30):
        deadline = time.monotonic() + within
        while True:
            value = await self.db.fetchval(query.replace("{s}", f'"{self.schema}"'), *args)
            if until(value) or time.monotonic() > deadline:
                return value
            await asyncio.sleep(0.05)

    async def wait_version(self, subject: str, version: int) -> int:
        found = await self.poll(
            "SELECT version FROM {s}.subjects WHERE subject_id = $1",
            subject,
            until=lambda v: v is not None and v >= version,
        )
        assert found == version, f"{subject}: version {found}, expected {version}"
        return int(found)

    async def wait_processed(self, *events: CloudEvent[Any]) -> None:
        ids = [e.id for e in events]
        count = await self.poll(
            "SELECT count(*) FROM {s}.inbox WHERE event_id = ANY($1)",
            ids,
            until=lambda n: n == len(ids),
        )
        assert count == len(ids)

    async def states(self, subject: str, count: int) -> list[ConsentStateData | None]:
        def mine(records: list[Any]) -> list[Any]:
            return [r for r in records if r.key == subject.encode()]

        records = await read_topic(
            self.infra.kafka, self.topics.consent_state, until=lambda rs: len(mine(rs)) >= count
        )
        return [None if r.value is None else decode(r.value).data for r in mine(records)]  # type: ignore[misc]

    async def decision(
        self, subject: str, purpose: str, when: datetime | None = None
    ) -> dict[str, Any]:
        params = {"purpose": purpose} | ({"at": when.isoformat()} if when else {})
        response = await self.http.get(f"/v1/subjects/{subject}/decisions", params=params)
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture(scope="module")
async def service(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    test_id = uuid.uuid4().hex[:10]
    catalogue = yaml.safe_load(PURPOSES_FILE.read_text())
    catalogue["purposes"]["preference_cookies"]["reconsent_from"] = "2026-11"
    purposes_file = tmp_path_factory.mktemp("consent") / "purposes.yaml"
    purposes_file.write_text(yaml.safe_dump(catalogue))
    topics = Topics().with_prefix(f"t{test_id}.")
    await ensure_topics(infra.kafka, topics, TopicPolicy(partitions=3))
    settings = ConsentSettings(
        kafka_bootstrap_servers=infra.kafka,
        database_url=infra.database_url,
        db_schema=f"t_{test_id}",
        group_id=f"g-{test_id}",
        topics=topics,
        api_token=TOKEN,
        ledger_key="ledger-test-key-0123",
        batch_timeout_ms=20,
        expiry_interval_s=0.1,
        purposes_file=purposes_file,
    )
    clock = ManualClock(datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
    runtime = build_runtime(settings, clock)
    await runtime.start()
    db = await asyncpg.connect(infra.database_url)
    transport = httpx.ASGITransport(app=runtime.asgi())
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://consent", headers=headers
    ) as http:
        try:
            yield Service(infra, topics, settings, clock, runtime, http, db)
        finally:
            await runtime.stop()
            rebuilt = [f"{settings.db_schema}_{kind}" for kind in ("rebuilt", "split", "spilled")]
            for schema in (settings.db_schema, *rebuilt):
                await db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await db.close()


def grant(subject: str, purpose: str, minute: float, **extra: Any) -> ConsentGranted:
    via = extra.pop("source", "web_form")
    return make.granted(subject, purpose, via=via, at=at(minute), **extra)


def withdraw(subject: str, purpose: str, minute: float) -> ConsentWithdrawn:
    return make.withdrawn(subject, purpose, at=at(minute))


def signed_up(subject: str, minute: float, **consents: bool) -> AccountSignedUp:
    return make.signed_up(subject, f"acc_{subject}", at=at(minute), consents=consents)


def gpc(subject: str, minute: float) -> GpcSignal:
    return make.gpc(subject, at=at(minute))


def allowed(state: ConsentStateData | None, purpose: str) -> bool:
    assert state is not None
    return state.purposes[purpose].allowed


async def test_opt_in_withdrawal_and_regrant_publish_each_snapshot(service: Service):
    s = "usr_optin"
    events: list[CloudEvent[Any]] = [
        signed_up(s, 0, marketing_email=True, analytics_cookies=False),
        withdraw(s, "marketing_email", 10),
        grant(s, "marketing_email", 20, evidence=Evidence(user_agent="Firefox/140")),
    ]
    for event in events:  # one at a time: each change is its own snapshot
        await service.send(
            service.topics.accounts_lifecycle
            if event is events[0]
            else service.topics.consent_changes,
            event,
        )
        await service.wait_version(s, events.index(event) + 1)
    states = await service.states(s, 3)
    assert [st.version for st in states if st] == [1, 2, 3]
    assert [allowed(st, "marketing_email") for st in states] == [True, False, True]
    assert [st.purposes["marketing_email"].state for st in states if st] == [
        "granted",
        "withdrawn",
        "granted",
    ]
    last = states[-1]
    assert last is not None
    assert last.purposes["analytics_cookies"].state == "default"  # unticked at sign-up
    assert last.purposes["transactional_email"].allowed is True
    assert last.purposes["marketing_email"].since == at(20)
    decision = await service.decision(s, "marketing_email")
    assert decision["allowed"] is True
    assert decision["basis"] == "consent"
    assert decision["reason"] == "granted"


async def test_a_grant_under_an_older_policy_answers_reconsent_required_until_renewed(
    service: Service,
):
    s = "usr_reconsent"
    await service.send(service.topics.accounts_lifecycle, signed_up(s, 0, preference_cookies=True))
    await service.wait_version(s, 1)
    old = await service.decision(s, "preference_cookies")
    assert (old["allowed"], old["state"], old["reconsent_required"]) == (False, "granted", True)
    await service.send(
        service.topics.consent_changes, grant(s, "preference_cookies", 1, policy_version="2026-11")
    )
    await service.wait_version(s, 2)
    assert (await service.decision(s, "preference_cookies"))["allowed"] is True
    states = await service.states(s, 2)
    assert [st.purposes["preference_cookies"].reconsent_required for st in states if st] == [
        True,
        False,
    ]


async def test_a_restriction_overrides_a_grant_until_lifted_and_an_objection_denies(
    service: Service,
):
    s = "usr_restrict"
    restricted = make.restricted(s, categories=["usage_data"], reason="disputed accuracy", at=at(2))
    objected = make.objected(s, purposes=["personalisation"], at=at(3))
    lifted = make.restriction_lifted(s, categories=["usage_data"], at=at(4))
    await service.send(service.topics.consent_changes, grant(s, "analytics_cookies", 1), restricted)
    await service.wait_version(s, 2)
    d = await service.decision(s, "analytics_cookies")
    assert (d["allowed"], d["state"], d["reason"]) == (False, "granted", "restricted: usage_data")
    await service.send(service.topics.consent_changes, objected, lifted)
    await service.wait_version(s, 4)
    assert (await service.decision(s, "analytics_cookies"))["allowed"] is True
    assert (await service.decision(s, "personalisation"))["reason"] == "default"
    states = await service.states(s, 4)
    assert states[1] is not None
    assert states[1].restrictions == ["usage_data"]
    assert states[3] is not None
    assert (states[3].restrictions, states[3].objections) == (
        [],
        ["personalisation"],
    )


async def test_gpc_withdraws_and_only_an_explicit_grant_regrants(service: Service):
    s = "usr_gpc"
    await service.send(
        service.topics.accounts_lifecycle,
        signed_up(s, 0, marketing_email=True, partner_marketing=True),
    )
    await service.wait_version(s, 1)
    await service.send(
        service.topics.consent_changes,
        gpc(s, 1),
        grant(s, "marketing_email", 2, consent_type="implied"),
        grant(s, "partner_marketing", 3, consent_type="explicit"),
    )
    await service.wait_version(s, 3)  # the implied grant changed nothing
    assert (await service.decision(s, "marketing_email"))["state"] == "withdrawn"
    assert (await service.decision(s, "partner_marketing"))["allowed"] is True
    replayed_signup = signed_up(s, 5, marketing_email=True)
    await service.send(service.topics.accounts_lifecycle, replayed_signup)
    await service.wait_processed(replayed_signup)
    assert (await service.decision(s, "marketing_email"))["allowed"] is False
    states = await service.states(s, 3)
    assert states[-1] is not None
    assert states[-1].gpc is True
    history = (await service.http.get(f"/v1/subjects/{s}/consent/history")).json()["entries"]
    refused = [e for e in history if e["note"] and e["note"].startswith("gpc: after")]
    assert len(refused) == 2


async def test_out_of_order_and_duplicate_delivery_give_the_same_final_state(service: Service):
    def script(subject: str) -> list[CloudEvent[Any]]:
        return [
            grant(subject, "marketing_email", 1),
            grant(subject, "analytics_cookies", 2),
            withdraw(subject, "marketing_email", 3),
            gpc(subject, 4),
            grant(subject, "partner_marketing", 5, consent_type="implied"),
            withdraw(subject, "analytics_cookies", 6),
            grant(subject, "analytics_cookies", 7, expires_at=at(100_000)),
            grant(subject, "personalisation", 8),
        ]

    ordered, shuffled = script("usr_order_a"), script("usr_order_b")
    random.Random(7).shuffle(shuffled)
    await service.send(service.topics.consent_changes, *ordered)
    await service.send(service.topics.consent_changes, *shuffled, *shuffled[:4])
    await service.wait_processed(*ordered, *shuffled)
    a = (await service.http.get("/v1/subjects/usr_order_a/consent")).json()
    b = (await service.http.get("/v1/subjects/usr_order_b/consent")).json()
    assert a["purposes"] == b["purposes"]
    assert (a["gpc"], b["gpc"]) == (True, True)
    assert a["purposes"]["marketing_email"]["state"] == "withdrawn"
    assert a["purposes"]["partner_marketing"]["state"] == "withdrawn"
    assert a["purposes"]["analytics_cookies"]["allowed"] is True
    inbox = await service.db.fetchval(
        f'SELECT count(*) FROM "{service.schema}".inbox WHERE event_id = ANY($1)',
        [e.id for e in shuffled],
    )
    assert inbox == len(shuffled)


async def test_withdrawing_a_contract_purpose_is_dead_lettered_and_not_applied(service: Service):
    s = "usr_contract"
    refused = withdraw(s, "transactional_email", 1)
    later = grant(s, "marketing_email", 2)
    await service.send(service.topics.consent_changes, refused, later)
    await service.wait_version(s, 1)
    dead = await read_topic(
        service.infra.kafka,
        service.topics.deadletter,
        until=lambda rs: any(refused.id.encode() in (r.value or b"") for r in rs),
    )
    mine = [r for r in dead if refused.id.encode() in (r.value or b"")]
    assert len(mine) == 1
    assert dict(mine[0].headers)["error"].decode().startswith("contract: transactional_email")
    assert (await service.decision(s, "transactional_email"))["allowed"] is True
    history = (await service.http.get(f"/v1/subjects/{s}/consent/history")).json()["entries"]
    assert [e["event_id"] for e in history] == [later.id]


async def test_the_api_answers_defaults_refuses_unknown_purposes_and_pages_history(
    service: Service,
):
    unknown = await service.decision("usr_never_seen", "marketing_email")
    assert (unknown["allowed"], unknown["state"], unknown["reason"]) == (
        False,
        "default",
        "default",
    )
    bad = await service.http.get("/v1/subjects/usr_x/decisions", params={"purpose": "telepathy"})
    assert bad.status_code == 400
    assert "marketing_email" in bad.json()["detail"]["known"]
    anonymous = await service.http.get(
        "/v1/subjects/usr_x/consent", headers={"Authorization": "Bearer wrong"}
    )
    assert anonymous.status_code == 401
    s = "usr_pages"
    await service.send(
        service.topics.consent_changes, *[grant(s, "personalisation", m) for m in range(5)]
    )
    await service.wait_version(s, 5)
    first = (
        await service.http.get(f"/v1/subjects/{s}/consent/history", params={"limit": 3})
    ).json()
    assert [e["seq"] for e in first["entries"]] == [1, 2, 3]
    rest = (
        await service.http.get(
            f"/v1/subjects/{s}/consent/history", params={"limit": 3, "after": first["next_after"]}
        )
    ).json()
    assert [e["seq"] for e in rest["entries"]] == [4, 5]
    assert rest["next_after"] is None
    assert (await service.http.get("/readyz")).status_code == 200


async def test_the_decision_hot_path_answers_exactly_as_the_full_route(service: Service):
    s = "usr_hot_path"
    await service.send(
        service.topics.consent_changes,
        grant(s, "marketing_email", 1, expires_at=at(10_000)),
        withdraw(s, "personalisation", 2),
    )
    await service.wait_version(s, 2)
    path = f"/v1/subjects/{s}/decisions"
    for purpose in ("marketing_email", "personalisation", "analytics_cookies"):
        fast = await service.http.get(path, params={"purpose": purpose})
        # An extra parameter sends the request past the hot path to the FastAPI route.
        full = await service.http.get(path, params={"purpose": purpose, "via": "route"})
        assert (
            (fast.status_code, fast.content)
            == (full.status_code, full.content)
            == (
                200,
                fast.content,
            )
        )
        assert fast.headers["content-type"] == full.headers["content-type"]
    refused = await service.http.get(
        path, params={"purpose": "marketing_email"}, headers={"Authorization": "Bearer nope"}
    )
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"


async def test_the_ledger_verifies_and_catches_a_changed_or_deleted_row(service: Service):
    s = "usr_ledger"
    await service.send(
        service.topics.consent_changes,
        grant(s, "marketing_email", 1, evidence=Evidence(ip_hash="9f2c", user_agent="Safari")),
        withdraw(s, "marketing_email", 2),
        grant(s, "personalisation", 3),
        grant(s, "analytics_cookies", 4),
    )
    await service.wait_version(s, 4)
    verify = f"/v1/subjects/{s}/consent/history/verify"
    assert (await service.http.get(verify)).json() == {
        "ok": True,
        "checked": 4,
        "broken_at": None,
        "reason": None,
    }
    ledger = f'"{service.schema}".ledger'
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await service.db.execute(
            f"UPDATE {ledger} SET new_state = 'granted' WHERE subject_id = $1 AND seq = 2", s
        )
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await service.db.execute(f"DELETE FROM {ledger} WHERE subject_id = $1 AND seq = 3", s)
    # Someone with the rights to bypass the trigger changes one row, then deletes another.
    async with service.db.transaction():
        await service.db.execute("SET LOCAL session_replication_role = replica")
        await service.db.execute(
            f"UPDATE {ledger} SET new_state = 'granted' WHERE subject_id = $1 AND seq = 2", s
        )
    changed = (await service.http.get(verify)).json()
    assert (changed["ok"], changed["broken_at"]) == (False, 2)
    async with service.db.transaction():
        await service.db.execute("SET LOCAL session_replication_role = replica")
        await service.db.execute(
            f"UPDATE {ledger} SET new_state = 'withdrawn' WHERE subject_id = $1 AND seq = 2", s
        )
        await service.db.execute(f"DELETE FROM {ledger} WHERE subject_id = $1 AND seq = 3", s)
    deleted = (await service.http.get(verify)).json()
    assert (deleted["ok"], deleted["broken_at"]) == (False, 3)
    async with service.db.transaction():
        await service.db.execute("SET LOCAL session_replication_role = replica")
        await service.db.execute(
            f'UPDATE {ledger} SET evidence = \'{{"ip_hash": "0000"}}\' WHERE subject_id = $1 AND seq = 1',
            s,
        )
    forged = (await service.http.get(verify)).json()
    assert (forged["ok"], forged["broken_at"]) == (False, 1)


async def test_erasure_leaves_a_tombstone_a_pseudonymised_ledger_and_late_events_restore_nothing(
    service: Service,
):
    s = "usr_erased"
    await service.send(service.topics.accounts_lifecycle, signed_up(s, 0, marketing_email=True))
    await service.send(
        service.topics.consent_changes,
        grant(s, "personalisation", 1, evidence=Evidence(user_agent="Edge")),
    )
    await service.wait_version(s, 2)
    erasure = make.erasure(
        s, "req_erase_1", verified_by="support:agent_1", source="portal", at=at(5)
    )
    await service.send(service.topics.privacy_requests, erasure)
    states = await service.states(s, 3)
    assert states[-1] is None  # the tombstone
    late: list[CloudEvent[Any]] = [
        grant(s, "marketing_email", 10),
        signed_up(s, 11, marketing_email=True),
    ]
    await service.send(service.topics.consent_changes, late[0])
    await service.send(service.topics.accounts_lifecycle, late[1])
    await service.wait_processed(*late)
    schema = f'"{service.schema}"'
    assert (
        await service.db.fetchval(
            f"SELECT count(*) FROM {schema}.subjects WHERE subject_id = $1", s
        )
        == 0
    )
    rows = await service.db.fetch(
        f"SELECT l::text AS row, l.subject_id, l.evidence FROM {schema}.ledger l"
    )
    erased_rows = [r for r in rows if r["subject_id"] is None]
    assert len(erased_rows) == 2
    assert all(r["evidence"] is None for r in erased_rows)
    assert not any(s in r["row"] or "Edge" in r["row"] for r in rows)
    assert await service.db.fetchval(f"SELECT count(*) FROM {schema}.suppressed") >= 1
    assert (await service.decision(s, "marketing_email"))["state"] == "default"
    assert (await service.http.get(f"/v1/subjects/{s}/consent/history/verify")).json()["ok"] is True
    _, public_key = sealing.new_keypair()
    job = new_event(
        ExportJob,
        subject=s,
        data=ExportJobData(
            job_id="job_after_erasure",
            request_id="req_export_after_erasure",
            owner="consent",
            categories=["consent_records"],
            due_by=at(10_000),
            public_key=public_key,
        ),
        source="privacy-plane.export",
        time=at(12),
    )
    await service.send(service.topics.privacy_jobs, job)
    receipts = await read_topic(
        service.infra.kafka,
        service.topics.privacy_receipts,
        until=lambda rs: any(r.key == s.encode() for r in rs),
    )
    answered = [decode(r.value) for r in receipts if r.key == s.encode()]
    assert [(p.data.job_id, p.data.record_count) for p in answered] == [("job_after_erasure", 0)]  # type: ignore[union-attr]
    assert len(await service.states(s, 3)) == 3  # nothing published after the tombstone


async def test_a_point_in_time_decision_matches_the_state_at_that_moment(service: Service):
    s = "usr_pit"
    await service.send(
        service.topics.consent_changes,
        grant(s, "marketing_email", 10),
        withdraw(s, "marketing_email", 20),
        grant(s, "marketing_email", 30),
    )
    await service.wait_version(s, 3)
    late_restriction = make.restricted(s, purposes=["marketing_email"], at=at(35))
    await service.send(
        service.topics.consent_changes, grant(s, "marketing_email", 15), late_restriction
    )
    await service.wait_version(s, 4)
    answers = [await service.decision(s, "marketing_email", at(m)) for m in (5, 12, 17, 25, 31, 40)]
    assert [(a["allowed"], a["reason"]) for a in answers] == [
        (False, "default"),
        (True, "granted"),
        (True, "granted"),  # the late grant at 15 held until the withdrawal at 20
        (False, "withdrawn"),
        (True, "granted"),
        (False, "restricted: marketing_email"),
    ]
    assert answers[3]["since"].startswith("2026-11-26T09:20:00")


async def test_the_decisions_client_asks_the_running_service_and_raises_its_refusals(
    service: Service,
):
    s = "usr_decisions_client"
    await service.send(
        service.topics.consent_changes,
        grant(s, "marketing_email", 10, expires_at=at(10_000)),
        withdraw(s, "personalisation", 20),
    )
    await service.wait_version(s, 2)
    transport = httpx.ASGITransport(app=service.runtime.asgi())
    async with DecisionsClient("http://consent", TOKEN, transport=transport) as consent:
        now = await consent.decide(s, "marketing_email")
        assert now == Decision.model_validate(await service.decision(s, "marketing_email"))
        assert (now.allowed, now.state, now.reason, now.basis) == (
            True,
            "granted",
            "granted",
            "consent",
        )
        assert now.expires_at == at(10_000)
        withdrawn = await consent.decide(s, "personalisation")
        assert (withdrawn.allowed, withdrawn.state) == (False, "withdrawn")
        before = await consent.decide(s, "marketing_email", at=at(5))
        assert (before.allowed, before.reason, before.at) == (False, "default", at(5))
        with pytest.raises(DecisionError) as unknown:
            await consent.decide(s, "telepathy")
        assert unknown.value.status == 400
        assert "unknown purpose 'telepathy'" in unknown.value.message
        assert "marketing_email" in unknown.value.message
    async with DecisionsClient("http://consent", "wrong", transport=transport) as stranger:
        with pytest.raises(DecisionError) as refused:
            await stranger.decide(s, "marketing_email")
    assert (refused.value.status, refused.value.message) == (401, "missing or invalid bearer token")


async def test_an_expiring_grant_lapses_by_itself_and_the_state_is_republished(service: Service):
    s = "usr_expiry"
    expires = service.clock.now() + timedelta(hours=1)
    await service.send(
        service.topics.consent_changes, grant(s, "personalisation", 1, expires_at=expires)
    )
    await service.wait_version(s, 1)
    assert (await service.decision(s, "personalisation"))["allowed"] is True
    service.clock.advance(timedelta(hours=2))
    immediate = await service.decision(s, "personalisation")
    assert (immediate["allowed"], immediate["state"]) == (False, "expired")
    states = await service.states(s, 2)
    assert states[1] is not None
    assert states[1].version == 2
    assert states[1].purposes["personalisation"].state == "expired"
    assert states[1].purposes["personalisation"].allowed is False
    history = (await service.http.get(f"/v1/subjects/{s}/consent/history")).json()["entries"]
    assert [(e["new_state"], e["occurred_at"]) for e in history][-1] == (
        "expired",
        expires.isoformat(),
    )


async def test_an_export_job_for_consent_is_answered_with_the_sealed_ledger(service: Service):
    s = "usr_export"
    await service.send(
        service.topics.consent_changes,
        grant(s, "marketing_email", 1, evidence=Evidence(tcf_string="CPXxRfAPXxRfAAfKABENB")),
        withdraw(s, "marketing_email", 2),
    )
    await service.wait_version(s, 2)
    private_key, public_key = sealing.new_keypair()

    def job(owner: str) -> ExportJob:
        data = ExportJobData(
            job_id=f"job_{owner}_{s}",
            request_id="req_export_1",
            owner=owner,
            categories=["consent_records"],
            due_by=at(10_000),
            public_key=public_key,
        )
        return new_event(ExportJob, subject=s, data=data, source="privacy-plane.export", time=at(3))

    await service.send(service.topics.privacy_jobs, job("crm"), job("consent"))
    records = await read_topic(
        service.infra.kafka,
        service.topics.privacy_receipts,
        until=lambda rs: any(r.key == s.encode() for r in rs),
    )
    parts = [decode(r.value) for r in records if r.key == s.encode()]
    assert len(parts) == 1
    part = parts[0]
    assert isinstance(part, ExportPart)
    assert (part.data.owner, part.data.category, part.data.job_id) == (
        "consent",
        "consent_records",
        "job_consent_usr_export",
    )
    plaintext = sealing.open_sealed(private_key, part.data.sealed or "")
    assert sealing.records_sha256(orjson.loads(plaintext)) == part.data.sha256
    exported = orjson.loads(plaintext)
    assert [e["new_state"] for e in exported] == ["granted", "withdrawn"]
    assert exported[0]["evidence"] == {"tcf_string": "CPXxRfAPXxRfAAfKABENB"}


async def test_rebuilding_from_offset_zero_gives_the_same_projection(service: Service):
    query = 'SELECT subject_id, doc FROM "{}".subjects ORDER BY subject_id'
    live = [tuple(r) for r in await service.db.fetch(query.format(service.schema))]
    assert len(live) >= 10
    into = f"{service.schema}_rebuilt"
    count = await rebuild(service.settings, into, service.clock, within_s=60)
    assert count == len(live)
    rebuilt = [tuple(r) for r in await service.db.fetch(query.format(into))]
    assert rebuilt == live
    suppressed = 'SELECT principal FROM "{}".suppressed ORDER BY 1'
    assert await service.db.fetch(suppressed.format(into)) == await service.db.fetch(
        suppressed.format(service.schema)
    )


async def rebuilt_equals_live(service: Service, into: str) -> None:
    """The rebuilt subjects and suppression list are the live ones; every rebuilt chain verifies
    with its head and salt, and erased persons' entries carry no personal field."""
    # Not the versions: live, a grant that lapsed before a later change counts one more.
    query = 'SELECT subject_id, doc FROM "{}".subjects ORDER BY subject_id'
    live = [tuple(r) for r in await service.db.fetch(query.format(service.schema))]
    assert [tuple(r) for r in await service.db.fetch(query.format(into))] == live
    suppressed = 'SELECT principal FROM "{}".suppressed ORDER BY 1'
    assert await service.db.fetch(suppressed.format(into)) == await service.db.fetch(
        suppressed.format(service.schema)
    )
    await service.db.execute(f'SET search_path TO "{into}"')
    try:
        principals = [
            r["principal"] for r in await service.db.fetch("SELECT principal FROM ledger_heads")
        ]
        assert len(principals) >= len(live)
        erased = {
            r["principal"] for r in await service.db.fetch("SELECT principal FROM suppressed")
        }
        for p in principals:
            head, salt = await store.head(service.db, p)
            entries = await store.ledger(service.db, p)
            check = ledger.verify_chain(entries, head, salt)
            assert check.ok, (p, check)
            if p in erased:
                assert salt is None
                assert all(e.subject_id is None and e.evidence is None for e in entries)
    finally:
        await service.db.execute("RESET search_path")


async def test_rebuilding_in_two_processes_by_partition_gives_the_same_projection(
    service: Service,
):
    into = f"{service.schema}_split"
    count = await rebuild(service.settings, into, service.clock, within_s=60, workers=2)
    assert count == await service.db.fetchval(f'SELECT count(*) FROM "{service.schema}".subjects')
    await rebuilt_equals_live(service, into)


async def test_rebuilding_with_little_memory_writes_states_out_and_reads_them_back(
    service: Service,
):
    into = f"{service.schema}_spilled"
    await rebuild(service.settings, into, service.clock, within_s=60, max_subjects=2)
    await rebuilt_equals_live(service, into)


async def test_a_rebuild_refuses_a_schema_that_is_not_empty(service: Service):
    with pytest.raises(RebuildError, match="is not empty"):
        await rebuild(service.settings, f"{service.schema}_rebuilt", service.clock, within_s=60)


async def test_a_policy_on_its_kept_topic_is_kept_live_and_by_a_rebuild(service: Service):
    """Contract 1.2.0: policy versions travel on `privacy.policies` (kept), which the rebuild
    replays before the other topics."""
    policy = make.policy_published("2031-01", effective_at=at(10**7), reconsent=(), at=at(1))
    await service.send(service.topics.privacy_policies, policy)
    await service.wait_processed(policy)
    query = 'SELECT version, effective_at, summary FROM "{}".policies ORDER BY 1'
    live = await service.db.fetch(query.format(service.schema))
    assert [r["version"] for r in live] == ["2031-01"]
    into = f"{service.schema}_policies"
    await rebuild(service.settings, into, service.clock, within_s=60)
    assert await service.db.fetch(query.format(into)) == live
