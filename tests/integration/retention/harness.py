"""A retention runtime on real Kafka and PostgreSQL with a manual clock, and event builders."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx

from services.retention.app import build_runtime
from services.retention.settings import RetentionSettings
from shared.contract import events as ev
from shared.contract.codec import decode
from shared.contract.envelope import CloudEvent, Data
from shared.contract.topics import Topics
from shared.plumbing.clock import ManualClock
from shared.plumbing.service import Runtime
from tests.support import events as make
from tests.support.infra import Infra
from tests.support.kafka import produce, read_topic

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)
TOKEN = "retention-t0ken-for-tests"
E = TypeVar("E", bound=CloudEvent[Any])
R = TypeVar("R")


def settings(
    infra: Infra, topics: Topics, schema: str, rules: Path | None = None, **extra: Any
) -> RetentionSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": infra.kafka,
        "database_url": infra.database_url,
        "db_schema": schema,
        "group_id": f"g-{schema}",
        "topics": topics,
        "api_token": TOKEN,
        "batch_timeout_ms": 20,
        "poll_interval": 0.05,
        **extra,
    }
    if rules is not None:
        values["retention_file"] = rules
    return RetentionSettings(**values)


def event(model: type[E], subject: str, data: Data, at: datetime = T0, source: str = "test") -> E:
    return model(  # type: ignore[call-arg]
        id=str(uuid.uuid4()), source=source, subject=subject, time=at, data=data
    )


def signed_up(subject: str, account: str, at: datetime = T0) -> ev.AccountSignedUp:
    return make.signed_up(subject, account, source="test", at=at, policy_version="1")


def closed(subject: str, account: str, at: datetime = T0) -> ev.AccountClosed:
    return make.account_closed(subject, account, closed_at=at, source="test", at=at)


def reopened(subject: str, account: str, at: datetime) -> ev.AccountReopened:
    data = ev.AccountReopenedData(account_id=account, reopened_at=at)
    return event(ev.AccountReopened, subject, data, at)


def subscription(account: str, days: int, at: datetime = T0) -> ev.SubscriptionChanged:
    data = ev.SubscriptionChangedData(account_id=account, plan="pro", crm_retention_days=days)
    return event(ev.SubscriptionChanged, account, data, at)


def hold(hold_id: str, subject: str, **kw: Any) -> ev.LegalHoldPlaced:
    return event(ev.LegalHoldPlaced, subject, ev.LegalHoldPlacedData(hold_id=hold_id, **kw))


def release(hold_id: str, subject: str, **kw: Any) -> ev.LegalHoldReleased:
    return event(ev.LegalHoldReleased, subject, ev.LegalHoldReleasedData(hold_id=hold_id, **kw))


def erasure(
    subject: str, request_id: str, scope: Any = "all", at: datetime = T0
) -> ev.ErasureRequested:
    return make.erasure(
        subject, request_id, scope=scope, verified_by="support:1", source="test", at=at
    )


def completed(subject: str, job_id: str, owner: str, records: int = 3) -> ev.DeletionCompleted:
    data = ev.DeletionCompletedData(job_id=job_id, owner=owner, records_deleted=records)
    return event(ev.DeletionCompleted, subject, data, source="owner")


def failed(subject: str, job_id: str, owner: str, retryable: bool = True) -> ev.DeletionFailed:
    data = ev.DeletionFailedData(job_id=job_id, owner=owner, error="db busy", retryable=retryable)
    return event(ev.DeletionFailed, subject, data, source="owner")


def consent_state(
    subject: str, version: int, marketing: str, allowed: bool, **more: Any
) -> ev.ConsentState:
    purposes = {
        "marketing_email": ev.PurposeState(state=marketing, allowed=allowed, basis="consent"),  # type: ignore[arg-type]
        "transactional_email": ev.PurposeState(state="default", allowed=True, basis="contract"),
    }
    data = ev.ConsentStateData(version=version, purposes=purposes, **more)
    return event(ev.ConsentState, subject, data, source="privacy-plane.consent")


async def eventually(
    probe: Callable[[], Awaitable[R]], ok: Callable[[R], bool], timeout: float = 20.0
) -> R:
    """Poll `probe` until `ok(value)`; return the last value (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    value = await probe()
    while not ok(value) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        value = await probe()
    return value


class Harness:
    """One running retention service with its clock, database and HTTP client."""

    def __init__(
        self, infra: Infra, topics: Topics, schema: str, runtime: Runtime[Any], clock: ManualClock
    ):
        self.infra = infra
        self.topics = topics
        self.schema = schema
        self.runtime = runtime
        self.clock = clock
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=runtime.asgi()),
            base_url="http://retention",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )

    @classmethod
    async def start(
        cls, infra: Infra, topics: Topics, schema: str, clock: ManualClock | None = None, **kw: Any
    ) -> Harness:
        clock = clock or ManualClock(T0)
        runtime = build_runtime(settings(infra, topics, schema, **kw), clock)
        await runtime.start()
        return cls(infra, topics, schema, runtime, clock)

    async def stop(self) -> None:
        await self.http.aclose()
        await self.runtime.stop()

    async def send(
        self, topic: str, *events: CloudEvent[Any] | tuple[bytes | None, bytes | None]
    ) -> None:
        await produce(self.infra.kafka, topic, events)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(
            self.infra.database_url, server_settings={"search_path": self.schema}
        )
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def jobs(
        self, where: str = "true", count: int = 1, timeout: float = 20.0
    ) -> list[asyncpg.Record]:
        """Jobs matching `where`, once at least `count` exist (or the timeout)."""
        sql = f"SELECT * FROM jobs WHERE {where} ORDER BY category, job_id"
        return await eventually(lambda: self.fetch(sql), lambda rows: len(rows) >= count, timeout)

    async def quiet(self) -> None:
        """Let the loop run a few polls at the current time (nothing more should happen)."""
        await asyncio.sleep(0.4)

    async def advance(self, delta: timedelta) -> None:
        self.clock.advance(delta)

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.http.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def published(
        self, topic: str, until: Callable[[list[Any]], bool], settle: float = 0.0
    ) -> list[Any]:
        records = await read_topic(self.infra.kafka, topic, until=until, timeout=20, settle=settle)
        return [(r.key, decode(r.value)) for r in records if r.value is not None]
