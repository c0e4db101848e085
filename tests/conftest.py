"""Fixtures: real infrastructure per session; own topics and schema per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from shared.contract.topics import Topics
from shared.plumbing.kafka import TopicPolicy, ensure_topics
from tests.support.infra import Infra, provide


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    with provide() as running:
        yield running


@pytest.fixture
def test_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def topics(infra: Infra, test_id: str) -> AsyncIterator[Topics]:
    """A private set of contract topics for this test (3 partitions each), deleted afterwards."""
    own = Topics().with_prefix(f"t{test_id}.")
    await ensure_topics(infra.kafka, own, TopicPolicy(partitions=3))
    yield own
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka)
    await admin.start()
    try:
        await admin.delete_topics(own.all())
    finally:
        await admin.close()


@pytest.fixture
async def schema(infra: Infra, test_id: str) -> AsyncIterator[str]:
    """A private database schema for this test, dropped afterwards."""
    name = f"t_{test_id}"
    yield name
    conn = await asyncpg.connect(infra.database_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()
