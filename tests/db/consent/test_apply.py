"""The consent pipeline against a real PostgreSQL schema, without Kafka: batches in, rows out."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from services.consent import domain
from services.consent.loops import expire_due
from services.consent.store import lock_subjects
from shared.contract.codec import decode
from shared.contract.events import (
    ConsentGranted,
    ConsentState,
    ConsentWithdrawn,
)
from shared.plumbing.loops import Items
from tests.db.consent.conftest import NOW, Setup
from tests.support import events as make

pytestmark = pytest.mark.db


def change(
    model: type[ConsentGranted | ConsentWithdrawn], subject: str, minute: int, **extra: Any
) -> Any:
    at = NOW + timedelta(minutes=minute)
    return make.consent_change(
        model, subject, "personalisation", via="api", source="crm", at=at, **extra
    )


async def test_a_batch_with_an_erasure_in_the_middle_suppresses_what_follows(setup: Setup):
    before, after = change(ConsentGranted, "usr_b", 1), change(ConsentGranted, "usr_b", 3)
    erasure = make.erasure(
        "usr_b", "req_1", verified_by="agent", source="portal", at=NOW + timedelta(minutes=2)
    )
    other = change(ConsentWithdrawn, "usr_c", 1)
    await setup.process(before, erasure, after, other)
    rows = await setup.outbox()
    assert [(r.key, r.value is None) for r in rows] == [
        (b"usr_b", False),
        (b"usr_b", True),
        (b"usr_c", False),
    ]
    assert await setup.pool.fetchval("SELECT count(*) FROM subjects") == 1
    ledger = await setup.pool.fetch("SELECT subject_id, event_id FROM ledger")
    assert {r["event_id"]: r["subject_id"] for r in ledger} == {before.id: None, other.id: "usr_c"}
    heads = await setup.pool.fetch("SELECT salt FROM ledger_heads ORDER BY salt NULLS FIRST")
    assert [h["salt"] is None for h in heads] == [True, False]
    assert await setup.pool.fetchval("SELECT count(*) FROM inbox") == 4


async def test_expiry_claims_only_what_no_consumer_holds_and_bumps_the_version(setup: Setup):
    await setup.process(change(ConsentGranted, "usr_e", 1, expires_at=NOW + timedelta(hours=1)))
    setup.clock.advance(timedelta(hours=2))
    async with setup.pool.acquire() as holder, holder.transaction():
        await lock_subjects(holder, ["usr_e"])  # a consumer is busy with this subject
        async with setup.pool.acquire() as conn, conn.transaction():
            assert (await expire_due(setup.consent, conn))[0] == 0
    async with setup.pool.acquire() as conn, conn.transaction():
        count, rows = await expire_due(setup.consent, conn)
    assert count == 1
    state = decode(rows[0].value)
    assert isinstance(state, ConsentState)
    assert state.data.version == 2
    assert state.data.purposes["personalisation"].state == "expired"
    async with setup.pool.acquire() as conn, conn.transaction():
        assert (await expire_due(setup.consent, conn))[0] == 0
    assert await setup.pool.fetchval("SELECT next_expiry FROM subjects") is None


async def test_a_subject_whose_expiry_fails_is_held_back_and_the_others_expire(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
):
    lapse = NOW + timedelta(minutes=30)
    await setup.process(
        change(ConsentGranted, "usr_bad", 1, expires_at=lapse - timedelta(minutes=1)),  # first due
        change(ConsentGranted, "usr_ok1", 1, expires_at=lapse),
        change(ConsentGranted, "usr_ok2", 1, expires_at=lapse),
    )
    setup.clock.advance(timedelta(hours=1))
    original = domain.expire

    def expire_failing_for_usr_bad(state: Any, now: Any) -> Any:
        if state.subject == "usr_bad":
            raise ValueError("this state cannot be expired")
        return original(state, now)

    monkeypatch.setattr(domain, "expire", expire_failing_for_usr_bad)
    items = Items("test", "consent-expiry")
    async with setup.pool.acquire() as conn, conn.transaction():
        count, rows = await expire_due(setup.consent, conn, items)
    assert count == 2
    assert sorted(r.key or b"" for r in rows) == [b"usr_ok1", b"usr_ok2"]
    assert items.held() == ["usr_bad"]
    async with setup.pool.acquire() as conn, conn.transaction():
        assert (await expire_due(setup.consent, conn, items))[0] == 0  # held back, not retried
    monkeypatch.setattr(domain, "expire", original)  # mended
    async with setup.pool.acquire() as conn, conn.transaction():
        count, rows = await expire_due(setup.consent, conn, Items("test", "after-fix"))
    assert (count, [r.key for r in rows]) == (1, [b"usr_bad"])
