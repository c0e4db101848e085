"""The consent pipeline on a real PostgreSQL schema, records fed directly (no Kafka)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from services.consent.app import MIGRATIONS
from services.consent.context import Context
from services.consent.handlers import HANDLERS
from services.consent.settings import ConsentSettings
from shared.contract.codec import encode
from shared.contract.envelope import CloudEvent
from shared.plumbing import db, outbox
from shared.plumbing.clock import ManualClock
from shared.plumbing.outbox import OutboxRow
from shared.plumbing.pipeline import Pipeline
from tests.support.infra import Infra
from tests.support.records import Record

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


@dataclass
class Setup:
    consent: Context
    pipeline: Pipeline
    pool: asyncpg.Pool
    clock: ManualClock

    async def process(self, *events: CloudEvent[Any]) -> None:
        records = []
        for offset, event in enumerate(events):
            key, value = encode(event)
            records.append(Record("consent.changes", 0, offset, key, value))
        await self.pipeline.process(records)

    async def outbox(self) -> list[OutboxRow]:
        async with self.pool.acquire() as conn:
            return await outbox.pending(conn)


@pytest.fixture
async def setup(infra: Infra, schema: str) -> AsyncIterator[Setup]:
    settings = ConsentSettings(
        kafka_bootstrap_servers="unused:9092",
        database_url=infra.database_url,
        db_schema=schema,
        api_token="t" * 16,
        ledger_key="component-ledger-key",
    )
    conn = await asyncpg.connect(infra.database_url)
    try:
        await db.migrate(conn, schema, MIGRATIONS)
    finally:
        await conn.close()
    pool = await db.create_pool(infra.database_url, schema, min_size=1, max_size=3)
    clock = ManualClock(NOW)
    consent = Context.from_settings(settings, clock)
    pipeline = Pipeline(
        service="consent",
        schema=schema,
        pool=pool,
        deadletter_topic="dead",
        accepts=HANDLERS.accepts,
        apply=HANDLERS.apply(consent),
    )
    try:
        yield Setup(consent, pipeline, pool, clock)
    finally:
        await pool.close()
