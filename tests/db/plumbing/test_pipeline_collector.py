"""Python's cyclic garbage collector is paused while a batch is in flight, and only then."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator

import asyncpg
import pytest

from shared.contract.codec import encode
from shared.plumbing import db
from shared.plumbing.db import Conn
from shared.plumbing.pipeline import Batch, CollectorPause, Pipeline
from tests.support import events as make
from tests.support.infra import Infra
from tests.support.records import Record

pytestmark = pytest.mark.db


class Handler:
    """Notes whether the collector runs; fails a batch that holds a `fail` subject."""

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.gc_during: list[bool] = []

    async def apply(self, conn: Conn, batch: Batch) -> None:
        self.gc_during.append(gc.isenabled())
        await conn.execute("SELECT 1")
        if any(e.subject.startswith("fail") for e in batch.events):
            raise ValueError("this batch breaks")
        self.applied.extend(e.subject for e in batch.events)


@pytest.fixture
async def pool(infra: Infra, schema: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await asyncpg.connect(infra.database_url)
    try:
        await db.migrate(conn, schema)
    finally:
        await conn.close()
    pool = await db.create_pool(infra.database_url, schema, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


def records(*subjects: str) -> list[Record]:
    out = []
    for offset, subject in enumerate(subjects):
        event = make.signed_up(subject, subject, source="crm", policy_version="v1")
        key, value = encode(event)
        out.append(Record("accounts.lifecycle", 0, offset, key, value))
    return out


async def test_the_collector_is_off_while_a_batch_applies_and_on_again_after(pool, schema):
    handler = Handler()
    pipeline = Pipeline(
        service="toy",
        schema=schema,
        pool=pool,
        deadletter_topic="dead",
        accepts={"account.signed_up.v1"},
        apply=handler.apply,
    )
    await pipeline.process(records("usr_1", "usr_2"))
    assert gc.isenabled()
    # A failing batch is isolated event by event (several transactions, one dead letter).
    await pipeline.process(records("usr_3", "fail_4"))
    assert handler.applied == ["usr_1", "usr_2", "usr_3"]
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 3
    assert len(handler.gc_during) == 4
    assert handler.gc_during
    assert not any(handler.gc_during)
    assert gc.isenabled()


def test_the_collector_resumes_when_the_last_batch_in_flight_ends():
    pause = CollectorPause(limit=10**9)
    assert gc.isenabled()
    with pause:
        assert not gc.isenabled()
        with pause:  # another batch, overlapping
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), pause:
        raise RuntimeError("a batch that fails")
    assert gc.isenabled()


def test_the_collector_is_left_alone_where_it_was_off():
    pause = CollectorPause()
    gc.disable()
    try:
        with pause:
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_overlapping_batches_collect_the_young_generation_past_the_limit():
    pause = CollectorPause(limit=0)
    before = gc.get_stats()[0]["collections"]
    with pause:
        with pause:
            pass
        assert gc.get_stats()[0]["collections"] == before + 1
    assert gc.isenabled()
