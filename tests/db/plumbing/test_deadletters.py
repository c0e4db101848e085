"""Each poison record is dead-lettered once, however often its batch is replayed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from shared.contract.codec import encode
from shared.plumbing import db, deadletters, outbox
from shared.plumbing.db import Conn
from shared.plumbing.pipeline import Batch, Pipeline
from tests.support import events as make
from tests.support.infra import Infra
from tests.support.records import Record

pytestmark = pytest.mark.db

TOPIC = "accounts.lifecycle"


class Toy:
    """Writes one effect per sign-up; a `fail*` subject breaks its batch, a `reject*` one breaks
    a contract rule. With `transient_once`, the first apply after the poison was isolated and
    dead-lettered fails as an outage would."""

    def __init__(self, *, transient_once: bool = False) -> None:
        self.transient_once = transient_once
        self.isolated_poison = False
        self.calls = 0

    async def apply(self, conn: Conn, batch: Batch) -> None:
        self.calls += 1
        if self.isolated_poison and self.transient_once:
            self.transient_once = False
            raise ConnectionResetError("the database went away")
        for event in batch.events:
            if event.subject.startswith("reject"):
                batch.reject(event, "contract: toy rule")
            else:
                await conn.execute("INSERT INTO effects VALUES ($1)", event.subject)
        if any(e.subject.startswith("fail") for e in batch.events):
            self.isolated_poison = len(batch.events) == 1
            raise ValueError("this batch breaks")


@pytest.fixture
async def pool(infra: Infra, schema: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await asyncpg.connect(infra.database_url)
    try:
        await db.migrate(conn, schema)
        await conn.execute("CREATE TABLE effects (subject text NOT NULL)")
    finally:
        await conn.close()
    pool = await db.create_pool(infra.database_url, schema, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


def pipeline(pool: asyncpg.Pool, schema: str, toy: Toy) -> Pipeline:
    return Pipeline(
        service="toy",
        schema=schema,
        pool=pool,
        deadletter_topic="dead",
        accepts={"account.signed_up.v1"},
        apply=toy.apply,
    )


def records(*items: Any) -> list[Record]:
    """Records at offsets 0, 1, ...: an event (keyed by its subject), `(key, event)` or bytes."""
    out = []
    for offset, item in enumerate(items):
        if isinstance(item, bytes):
            key, value = b"k", item
        elif isinstance(item, tuple):
            key, value = item[0], encode(item[1])[1]
        else:
            key, value = encode(item)
        out.append(Record(TOPIC, 0, offset, key, value))
    return out


async def dead_letters(pool: asyncpg.Pool) -> dict[int, list[str]]:
    """The errors of the dead letters written, by their original offset."""
    async with pool.acquire() as conn:
        rows = await outbox.pending(conn)
    found: dict[int, list[str]] = {}
    for row in rows:
        if row.topic == "dead":
            found.setdefault(int(row.headers["original_offset"]), []).append(row.headers["error"])
    return found


async def effects(pool: asyncpg.Pool) -> list[str]:
    return [r["subject"] for r in await pool.fetch("SELECT subject FROM effects ORDER BY 1")]


async def test_a_replayed_batch_writes_no_second_dead_letter_and_no_second_effect(pool, schema):
    twin = make.signed_up("usr_6", source="crm")
    other = twin.model_copy(update={"data": twin.data.model_copy(update={"jurisdiction": "FR"})})
    batch = records(
        make.signed_up("usr_1", source="crm"),
        b"{not json",
        make.signed_up("fail_2", source="crm"),
        (b"someone_else", make.signed_up("usr_3", source="crm")),
        make.signed_up("reject_4", source="crm"),
        make.signed_up("usr_5", source="crm"),
        twin,
        other,
    )
    consumer = pipeline(pool, schema, Toy())
    await consumer.process(batch)
    first = await dead_letters(pool)
    assert sorted(first) == [1, 2, 3, 4, 7]
    assert first[1][0].startswith("not a CloudEvents structured JSON event: ")
    assert first[2] == ["handler error: ValueError: this batch breaks"]
    assert first[3] == ["Kafka key must equal the event's subject"]
    assert first[4] == ["contract: toy rule"]
    assert first[7] == ["conflict: same source and id, other content"]
    inbox = await pool.fetchval("SELECT count(*) FROM inbox")
    assert await effects(pool) == ["usr_1", "usr_5", "usr_6"]

    await consumer.process(batch)  # the offsets never committed: the same records

    assert await dead_letters(pool) == first
    assert await pool.fetchval("SELECT count(*) FROM inbox") == inbox
    assert await effects(pool) == ["usr_1", "usr_5", "usr_6"]
    kinds = await pool.fetch('SELECT "offset", reason_kind FROM deadlettered ORDER BY 1')
    assert [(r["offset"], r["reason_kind"]) for r in kinds] == [
        (1, "undecodable"),
        (2, "handler_error"),
        (3, "key_mismatch"),
        (4, "forbidden"),
        (7, "conflict"),
    ]


async def test_a_transient_failure_after_isolating_the_poison_writes_its_dead_letter_once(
    pool, schema
):
    toy = Toy(transient_once=True)
    batch = records(
        make.signed_up("usr_1", source="crm"),
        make.signed_up("fail_2", source="crm"),
        make.signed_up("usr_3", source="crm"),
    )
    await pipeline(pool, schema, toy).process(batch)
    assert not toy.transient_once  # the outage happened, after the poison's dead letter
    # whole batch, 3 isolated, outage; then whole batch again and 2 isolated (usr_1 is done)
    assert toy.calls == 7
    assert await dead_letters(pool) == {1: ["handler error: ValueError: this batch breaks"]}
    assert await effects(pool) == ["usr_1", "usr_3"]


async def test_origins_older_than_the_memory_are_forgotten_and_newer_ones_kept(pool: asyncpg.Pool):
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO deadlettered (topic, partition, "offset", reason_kind, at)
            VALUES ('t', 0, 1, 'invalid', now() - interval '31 days'),
                   ('t', 0, 2, 'invalid', now() - interval '29 days'),
                   ('t', 0, 3, 'invalid', now())"""
        )
        assert await deadletters.forget_old(conn, 30) == 1
        kept = await conn.fetch('SELECT "offset" FROM deadlettered ORDER BY 1')
    assert [r["offset"] for r in kept] == [2, 3]
