"""Fixtures: real infrastructure per session; own topics and schema per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from shared.contract.topics import Topics
from shared.plumbing.kafka import TopicPolicy, ensure_topics
from tests.support.infra import Infra, provide

# Tests start services on fresh schemas of their own, so each service migrates its schema at
# start (<PREFIX>MIGRATE_ON_START; production runs `privacy-plane migrate` as the owner and the
# service only checks). Set here once, so every runtime a test builds in process, and every
# service process the fault harness starts, does it. The tests of the production path
# (tests/db/deploy/test_grants.py) turn it off explicitly.
for _prefix in ("", "CONSENT_", "RETENTION_", "EXPORT_", "TOY_"):
    os.environ.setdefault(f"{_prefix}MIGRATE_ON_START", "true")


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
