"""The thin path through the shared plumbing, on real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from faststream.kafka import KafkaMessage, KafkaRouter

from shared.contract.codec import decode, new_event
from shared.contract.events import (
    AccountClosed,
    AccountSignedUp,
    ConsentState,
    ConsentStateData,
)
from shared.contract.topics import Topics
from shared.plumbing import db, readiness
from shared.plumbing.context import ServiceContext
from shared.plumbing.handlers import Handlers, Tx, plain_tx
from shared.plumbing.pipeline import Pipeline
from shared.plumbing.service import PIPELINE, Runtime, ServiceSpec, batch_subscriber, records_of
from shared.plumbing.settings import ServiceSettings
from tests.support import events as make
from tests.support.infra import Infra
from tests.support.kafka import produce, read_topic

pytestmark = pytest.mark.integration

TOY_MIGRATIONS = Path(__file__).parent / "toy_migrations"


async def on_account(ctx: ServiceContext, tx: Tx, event: AccountSignedUp | AccountClosed) -> None:
    if isinstance(event, AccountClosed) and event.data.reason == "forbidden":
        tx.batch.reject(event, "contract: toy rule forbids this reason")
        return
    await tx.conn.execute(
        "INSERT INTO toy_seen (event_id, subject, type) VALUES ($1, $2, $3)",
        event.id,
        event.subject,
        event.type,
    )
    state = new_event(
        ConsentState,
        subject=event.subject,
        source="toy",
        data=ConsentStateData(version=1, purposes={}),
    )
    tx.outbox.publish(ctx.settings.topics.consent_state, state)


TOY_HANDLERS: Handlers[ServiceContext, Tx] = Handlers(
    {AccountSignedUp: on_account, AccountClosed: on_account}, begin=plain_tx
)


def toy_runtime(settings: ServiceSettings) -> Runtime[ServiceContext]:
    router = KafkaRouter()

    @batch_subscriber(router, settings, settings.topics.accounts_lifecycle)
    async def consume(_: None, msg: KafkaMessage, pipeline: Pipeline = PIPELINE) -> None:
        await pipeline.process(records_of(msg))

    spec = ServiceSpec(
        name="toy",
        context=ServiceContext(settings=settings),
        migrations=TOY_MIGRATIONS,
        inbound=router,
        handlers=TOY_HANDLERS,
        publishes={},
    )
    return Runtime(spec)


def toy_settings(infra: Infra, topics: Topics, schema: str) -> ServiceSettings:
    return ServiceSettings(
        service_name="toy",
        kafka_bootstrap_servers=infra.kafka,
        database_url=infra.database_url,
        db_schema=schema,
        group_id=f"g-{schema}",
        topics=topics,
        api_token="plumbing-t0ken-for-tests",
        batch_timeout_ms=20,
    )


def signed_up(subject: str) -> AccountSignedUp:
    return make.signed_up(subject, source="accounts-service", policy_version="1")


async def seen_rows(infra: Infra, schema: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(infra.database_url)
    try:
        return await conn.fetch(f'SELECT event_id, subject FROM "{schema}".toy_seen')
    finally:
        await conn.close()


async def wait_rows(
    infra: Infra, schema: str, count: int, timeout: float = 30
) -> list[asyncpg.Record]:
    async def poll() -> list[asyncpg.Record]:
        while True:
            try:
                rows = await seen_rows(infra, schema)
            except asyncpg.UndefinedTableError:
                rows = []
            if len(rows) >= count:
                return rows
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(poll(), timeout)


async def test_event_lands_once_and_its_outbox_event_is_published(infra, topics, schema):
    runtime = toy_runtime(toy_settings(infra, topics, schema))
    await runtime.start()
    try:
        event = signed_up("usr_1")
        await produce(infra.kafka, topics.accounts_lifecycle, [event, event])
        later = signed_up("usr_2")
        await produce(infra.kafka, topics.accounts_lifecycle, [later])
        rows = await wait_rows(infra, schema, 2)
        await asyncio.sleep(0.5)
        rows = await seen_rows(infra, schema)
        assert sorted(r["event_id"] for r in rows) == sorted([event.id, later.id])
        published = await read_topic(infra.kafka, topics.consent_state, until=lambda r: len(r) >= 2)
        assert sorted(decode(r.value).subject for r in published) == ["usr_1", "usr_2"]
        assert {r.key for r in published} == {b"usr_1", b"usr_2"}
    finally:
        await runtime.stop()


async def test_poison_goes_to_deadletter_and_the_next_event_is_still_consumed(
    infra, topics, schema
):
    runtime = toy_runtime(toy_settings(infra, topics, schema))
    await runtime.start()
    try:
        good = signed_up("usr_9")
        forbidden = make.account_closed(
            "usr_8", "a", closed_at=datetime.now(UTC), reason="forbidden", source="accounts-service"
        )
        conflict = good.model_copy(
            update={"data": good.data.model_copy(update={"policy_version": "2"})}
        )
        await produce(
            infra.kafka,
            topics.accounts_lifecycle,
            [(b"usr_7", b"{not json"), (b"usr_7", b"\xff\xfe"), forbidden, good, conflict],
        )
        rows = await wait_rows(infra, schema, 1)
        assert [r["event_id"] for r in rows] == [good.id]
        dead = await read_topic(infra.kafka, topics.deadletter, until=lambda r: len(r) >= 4)
        reasons = sorted(dict(r.headers)["error"].decode().split(":")[0] for r in dead)
        assert reasons == [
            "conflict",
            "contract",
            "not a CloudEvents structured JSON event",
            "not a CloudEvents structured JSON event",
        ]
        first = (
            dead[0]
            if dead[0].value == b"{not json"
            else next(r for r in dead if r.value == b"{not json")
        )
        headers = dict(first.headers)
        assert headers["original_topic"].decode() == topics.accounts_lifecycle
        assert headers["service"] == b"toy"
        assert int(headers["original_offset"]) >= 0
    finally:
        await runtime.stop()


async def test_crash_between_db_commit_and_offset_commit_replays_without_doubling(
    infra, topics, schema
):
    settings = toy_settings(infra, topics, schema)
    first = toy_runtime(settings)
    await first.start()
    assert first.pipeline is not None
    real_process = first.pipeline.process
    crashed = asyncio.Event()

    async def commit_then_crash(records):
        await real_process(records)  # the database transaction commits here
        crashed.set()
        raise asyncio.CancelledError  # dies before FastStream commits the offset

    first.pipeline.process = commit_then_crash  # type: ignore[method-assign]
    events = [signed_up(f"usr_{i}") for i in range(5)]
    await produce(infra.kafka, topics.accounts_lifecycle, events)
    await asyncio.wait_for(crashed.wait(), 30)
    await first.stop()

    second = toy_runtime(settings)
    await second.start()
    try:
        rows = await wait_rows(infra, schema, 5)
        await asyncio.sleep(1.0)
        rows = await seen_rows(infra, schema)
        assert sorted(r["event_id"] for r in rows) == sorted(e.id for e in events)
        conn = await asyncpg.connect(infra.database_url)
        try:
            inbox = await conn.fetchval(f'SELECT count(*) FROM "{schema}".inbox')
        finally:
            await conn.close()
        assert inbox == 5
    finally:
        await second.stop()


async def test_two_replicas_share_the_work_with_one_relay_and_no_event_twice(infra, topics, schema):
    settings = toy_settings(infra, topics, schema)
    replicas = [toy_runtime(settings), toy_runtime(settings)]
    for replica in replicas:
        await replica.start()
    try:
        events = [signed_up(f"usr_{i}") for i in range(60)]
        await produce(infra.kafka, topics.accounts_lifecycle, events)
        await wait_rows(infra, schema, 60)
        published = await read_topic(
            infra.kafka, topics.consent_state, until=lambda r: len(r) >= 60, settle=0.5
        )
        assert len({decode(r.value).id for r in published}) == len(published) == 60
        leaders = [r.relay.leader for r in replicas if r.relay is not None]
        assert sorted(leaders) == [False, True]
    finally:
        for replica in replicas:
            await replica.stop()


async def test_readiness_is_answered_from_memory_and_asks_the_database_at_most_once_a_second(
    infra, topics, schema, monkeypatch: pytest.MonkeyPatch
):
    asked = 0
    original = db.pending_migrations

    async def counted(conn: Any, *directories: Path) -> list[str]:
        nonlocal asked
        asked += 1
        return await original(conn, *directories)

    monkeypatch.setattr(db, "pending_migrations", counted)
    runtime = toy_runtime(toy_settings(infra, topics, schema))
    await runtime.start()
    transport = httpx.ASGITransport(app=runtime.asgi())
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://toy") as client:
            for _ in range(100):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            before, started = asked, time.monotonic()
            statuses = Counter([(await client.get("/readyz")).status_code for _ in range(10_000)])
            took = time.monotonic() - started
            body = (await client.get("/readyz")).json()
            details = await client.get("/v1/ops/readiness")
            allowed = await client.get(
                "/v1/ops/readiness", headers={"Authorization": "Bearer plumbing-t0ken-for-tests"}
            )
    finally:
        await runtime.stop()
    assert statuses == {200: 10_000}
    assert asked - before <= took / readiness.EVERY + 2  # the background check's pace, no more
    assert body == {"ready": True, "checks": dict.fromkeys(readiness.CHECKS, "ok")}
    assert details.status_code == 401
    assert allowed.json() == {"ready": True, "problems": dict.fromkeys(readiness.CHECKS)}


def test_the_open_readiness_answer_names_no_reason():
    state = readiness.Readiness()
    state.set("database", "unreachable: ConnectionRefusedError: [Errno 111] 127.0.0.1:5432")
    state.set("migrations", None)
    state.set("broker", None)
    assert not state.ready
    assert state.public() == {"database": "not ok", "migrations": "ok", "broker": "ok"}
