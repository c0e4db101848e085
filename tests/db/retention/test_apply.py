"""The retention handlers' apply() and rule recompute against a real PostgreSQL schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import pytest

from services.retention import handlers, workflow
from services.retention import loops as timers
from services.retention.app import MIGRATIONS
from services.retention.context import Context
from services.retention.settings import RetentionSettings
from shared.catalogue import Period, RetentionRules, load_retention
from shared.contract.envelope import CloudEvent
from shared.plumbing import db
from shared.plumbing.clock import ManualClock
from shared.plumbing.loops import Items
from shared.plumbing.outbox import Outbox, OutboxRow
from shared.plumbing.pipeline import Batch, Delivery
from tests.integration.retention.harness import (
    DAY,
    T0,
    closed,
    completed,
    erasure,
    reopened,
    signed_up,
    subscription,
)
from tests.support.records import Record

pytestmark = pytest.mark.db


@pytest.fixture
async def pool(infra, schema) -> AsyncIterator[asyncpg.Pool]:
    conn = await asyncpg.connect(infra.database_url)
    try:
        await db.migrate(conn, schema, MIGRATIONS)
    finally:
        await conn.close()
    created = await db.create_pool(infra.database_url, schema, min_size=1, max_size=2)
    yield created
    await created.close()


def context(infra: Any, schema: str, rules: RetentionRules | None = None) -> Context:
    settings = RetentionSettings(
        kafka_bootstrap_servers=infra.kafka,
        database_url=infra.database_url,
        db_schema=schema,
        api_token="t" * 16,
    )
    return Context(settings=settings, rules=rules or load_retention(), clock=ManualClock(T0))


async def apply(pool: asyncpg.Pool, ctx: Context, *events: CloudEvent[Any]) -> Batch:
    batch = Batch(
        events=list(events),  # type: ignore[arg-type]
        outbox=Outbox(),
        _deliveries={e.key: Delivery(Record("t", 0, 0, None, None), e, b"") for e in events},  # type: ignore[arg-type]
        _dead_letter=lambda _record, reason: OutboxRow("dead", None, None, {"error": reason}),
    )
    async with pool.acquire() as conn, conn.transaction():
        await handlers.HANDLERS.apply(ctx)(conn, batch)
    return batch


async def dues(pool: asyncpg.Pool, category: str) -> list[Any]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT due_at FROM timers WHERE category = $1 AND status = 'pending'", category
        )
    return [r["due_at"] for r in rows]


async def test_terms_arriving_after_the_closure_move_the_pending_crm_timers(infra, schema, pool):
    ctx = context(infra, schema)
    await apply(pool, ctx, signed_up("usr_1", "acc_1"), closed("usr_1", "acc_1"))
    assert await dues(pool, "crm_data") == [T0 + 30 * DAY]
    await apply(pool, ctx, subscription("acc_1", 90, T0 + DAY))
    assert await dues(pool, "crm_data") == [T0 + 90 * DAY]
    assert await dues(pool, "usage_data") == [T0 + 30 * DAY]
    await apply(pool, ctx, subscription("acc_1", 10, T0))  # older terms arriving late
    assert await dues(pool, "crm_data") == [T0 + 90 * DAY]


async def test_a_late_reopening_older_than_the_closure_changes_nothing(infra, schema, pool):
    ctx = context(infra, schema)
    await apply(pool, ctx, closed("usr_1", "acc_1", T0 + DAY))
    await apply(pool, ctx, reopened("usr_1", "acc_1", T0))
    assert await dues(pool, "usage_data") == [T0 + 31 * DAY]
    await apply(pool, ctx, reopened("usr_1", "acc_1", T0 + 2 * DAY))
    assert await dues(pool, "usage_data") == []


async def test_an_erasure_naming_an_unknown_category_is_rejected_before_any_write(
    infra, schema, pool
):
    ctx = context(infra, schema)
    bad = erasure("usr_1", "req_x", scope=["crm_data", "dna_samples"])
    batch = await apply(pool, ctx, bad)
    assert batch.rejected == {bad.key}
    assert batch.outbox.rows[0].headers["error"] == "contract: unknown categories: dna_samples"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM requests") == 0
        assert await conn.fetchval("SELECT count(*) FROM timers") == 0


async def test_receipts_from_another_owner_or_for_unknown_jobs_are_rejected(infra, schema, pool):
    ctx = context(infra, schema)
    await apply(pool, ctx, closed("usr_1", "acc_1"))
    await timers.fire_batch(pool, ctx, schema, T0)
    async with pool.acquire() as conn:
        job_id = await conn.fetchval("SELECT job_id FROM jobs")
    wrong = completed("usr_1", job_id, "crm")
    unknown = completed("usr_1", "job_nope", "marketing")
    batch = await apply(pool, ctx, wrong, unknown)
    assert batch.rejected == {wrong.key, unknown.key}
    right = completed("usr_1", job_id, "marketing")
    again = completed("usr_1", job_id, "marketing")
    batch = await apply(pool, ctx, right, again)
    assert batch.rejected == set()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM certificates") == 1


async def test_changed_rules_reschedule_pending_timers_once(infra, schema, pool):
    ctx = context(infra, schema)
    await apply(pool, ctx, closed("usr_1", "acc_1"))
    await timers.apply_rules(pool, ctx)
    longer = ctx.rules.categories["usage_data"].model_copy(update={"period": Period(days=60)})
    rules = RetentionRules(categories={**ctx.rules.categories, "usage_data": longer})
    changed = context(infra, schema, rules)
    await timers.apply_rules(pool, changed)
    assert await dues(pool, "usage_data") == [T0 + 60 * DAY]
    assert await dues(pool, "account_profile") == [T0 + 90 * DAY]
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT rules FROM rules_state")
    assert '"days": 60' in stored


async def test_a_second_closure_keeps_the_first_schedule_and_covers_its_own_subject(
    infra, schema, pool
):
    ctx = context(infra, schema)
    await apply(pool, ctx, closed("usr_1", "acc_1"))
    await apply(pool, ctx, closed("usr_2", "acc_1", T0 + 5 * DAY))
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT subject_id, due_at FROM timers WHERE category = 'usage_data' ORDER BY 1"
        )
    assert [tuple(r) for r in rows] == [("usr_1", T0 + 30 * DAY), ("usr_2", T0 + 30 * DAY)]


async def test_a_timer_whose_firing_fails_is_held_back_and_the_others_fire(
    infra, schema, pool, monkeypatch: pytest.MonkeyPatch
):
    ctx = context(infra, schema)
    for n in range(3):
        await apply(pool, ctx, closed(f"usr_{n}", f"acc_{n}"))
    original = workflow.fire

    async def fire_failing_for_usr_1(conn: Any, c: Any, out: Any, claimed: Any, now: Any) -> Any:
        if any(timer.subject_id == "usr_1" for timer, _ in claimed):
            raise ValueError("this timer cannot be fired")
        return await original(conn, c, out, claimed, now)

    monkeypatch.setattr(workflow, "fire", fire_failing_for_usr_1)
    items = Items("test", "retention-timers")
    clock = cast(ManualClock, ctx.clock)
    clock.advance(3 * 365 * DAY)  # every closure timer is due
    await timers.fire_batch(pool, ctx, schema, clock.now(), items)
    async with pool.acquire() as conn:
        jobs = {r["subject_id"] for r in await conn.fetch("SELECT subject_id FROM jobs")}
        stuck = await conn.fetch(
            "SELECT status, fired_at FROM timers WHERE subject_id = 'usr_1' ORDER BY id"
        )
    assert jobs == {"usr_0", "usr_2"}
    assert {(r["status"], r["fired_at"]) for r in stuck} == {("pending", None)}
    assert items.held() != []
    assert await timers.fire_batch(pool, ctx, schema, clock.now(), items) is False  # held
    monkeypatch.setattr(workflow, "fire", original)  # mended
    await timers.fire_batch(pool, ctx, schema, clock.now(), Items("test", "after-fix"))
    async with pool.acquire() as conn:
        jobs = {r["subject_id"] for r in await conn.fetch("SELECT subject_id FROM jobs")}
    assert jobs == {"usr_0", "usr_1", "usr_2"}
