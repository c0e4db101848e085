"""The consent ledger against its signed checkpoints: rewriting a person's chain consistently
with SQL (every hash recomputed) passes the old per-person check but not the checkpoints, as
the service's own role and as a superuser; erasure still verifies."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from typer.testing import CliRunner

from services.consent import ledger, store
from services.consent.app import MIGRATIONS
from services.consent.checkpoints import LEDGER, ledger_leaves
from services.consent.context import Context
from services.consent.handlers import HANDLERS
from services.consent.settings import ConsentSettings
from shared.cli import app
from shared.cli.evidence import audit_log
from shared.contract.codec import encode
from shared.contract.envelope import CloudEvent
from shared.evidence.audit import Report
from shared.evidence.loop import checkpoint_now
from shared.evidence.signing import Verifier
from shared.plumbing import db
from shared.plumbing.clock import ManualClock
from shared.plumbing.pipeline import Pipeline
from tests.db.evidence.conftest import Owned, export
from tests.support import events as make
from tests.support.records import Record

pytestmark = pytest.mark.db

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SRC = "web"


@dataclass
class Consent:
    ctx: Context
    pool: asyncpg.Pool
    pipeline: Pipeline
    schema: str
    offset: int = 0

    async def process(self, *events: CloudEvent[Any]) -> None:
        records = []
        for event in events:
            key, value = encode(event)
            records.append(Record("consent.changes", 0, self.offset, key, value))
            self.offset += 1
        await self.pipeline.process(records)

    async def audit(self, public_key: str, checkpoints: Path) -> Report:
        verifier = Verifier.of([public_key])
        return await audit_log("consent", self.schema, ledger_leaves, verifier, checkpoints)


@contextlib.asynccontextmanager
async def open_consent(dsn: str, schema: str, key_file: Path) -> AsyncIterator[Consent]:
    """The consent service's pipeline and context on `schema`, connected as `dsn`'s role."""
    settings = ConsentSettings(
        kafka_bootstrap_servers="unused:9092",
        database_url=dsn,
        db_schema=schema,
        api_token="t" * 16,
        ledger_key="component-ledger-key",
        checkpoint_key_file=key_file,
    )
    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn, schema, MIGRATIONS)
    finally:
        await conn.close()
    pool = await db.create_pool(dsn, schema, min_size=1, max_size=2)
    ctx = Context.from_settings(settings, ManualClock(T0))
    await ctx.open(pool)
    pipeline = Pipeline(
        service="consent",
        schema=schema,
        pool=pool,
        deadletter_topic="dead",
        accepts=HANDLERS.accepts,
        apply=HANDLERS.apply(ctx),
    )
    try:
        yield Consent(ctx, pool, pipeline, schema)
    finally:
        await ctx.close()
        await pool.close()


@pytest.fixture
async def consent(
    owned: Owned, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Consent]:
    """The consent service on a schema its own role owns; the verifier reads as superuser."""
    monkeypatch.setenv("PP_DATABASE_URL", owned.admin_dsn)
    async with open_consent(owned.role_dsn, owned.schema, key_file) as opened:
        yield opened


async def history(c: Consent, tmp_path: Path) -> Path:
    """Three people's changes and one erasure, checkpointed; one change after; the export."""
    at = [T0 + timedelta(minutes=i) for i in range(8)]
    await c.process(
        make.granted("usr_a", "marketing_email", source=SRC, at=at[0]),
        make.granted("usr_b", "analytics_cookies", source=SRC, at=at[1]),
        make.withdrawn("usr_a", "marketing_email", source=SRC, at=at[2]),
        make.granted("usr_c", "personalisation", source=SRC, at=at[3]),
        make.granted("usr_a", "analytics_cookies", source=SRC, at=at[4]),
    )
    await c.process(make.erasure("usr_c", "req_1", verified_by="support", source=SRC, at=at[5]))
    assert await checkpoint_now(c.ctx, LEDGER) is not None
    # an erasure after the checkpoint blanks entries it signed: they still verify
    await c.process(make.erasure("usr_b", "req_2", verified_by="support", source=SRC, at=at[6]))
    await c.process(make.granted("usr_d", "marketing_email", source=SRC, at=at[7]))
    return await export(c.pool, c.ctx.settings.topics.privacy_audit, tmp_path / "cps.jsonl")


async def rewrite_withdrawal_as_grant(conn: asyncpg.Connection, principal: str) -> None:
    """usr_a's withdrawal becomes a grant; every later hash of the chain and the head are
    recomputed, so the person's own chain still verifies (the attack checkpoints answer)."""
    entries = await store.ledger(conn, principal)
    rewritten, prev = [], ledger.GENESIS
    for entry in entries:
        if entry.seq == 2:
            entry = replace(entry, new_state="granted", event_type="consent.granted.v1")
        entry = replace(entry, prev_hash=prev)
        entry = replace(entry, hash=ledger.entry_hash(entry))
        rewritten.append(entry)
        prev = entry.hash
    assert ledger.verify_chain(rewritten, ledger.Head(rewritten[-1].seq, prev)).ok
    async with conn.transaction():
        await conn.execute("ALTER TABLE ledger DISABLE TRIGGER USER")
        for e in rewritten:
            await conn.execute(
                "UPDATE ledger SET new_state = $3, event_type = $4, prev_hash = $5, hash = $6"
                " WHERE principal = $1 AND seq = $2",
                principal, e.seq, e.new_state, e.event_type, e.prev_hash, e.hash,
            )  # fmt: skip
        await conn.execute(
            "UPDATE ledger_heads SET hash = $2 WHERE principal = $1", principal, prev
        )
        await conn.execute("ALTER TABLE ledger ENABLE TRIGGER USER")


async def test_the_ledger_verifies_against_its_checkpoints_through_erasures(
    consent: Consent, public_key: str, tmp_path: Path
) -> None:
    report = await consent.audit(public_key, await history(consent, tmp_path))
    assert report.ok, report.reason
    assert report.covered == 5  # usr_a 3, usr_b 1, usr_c 1 (erasures blank, add no line)
    assert report.uncovered == 1  # usr_d: not yet protected


async def test_a_consistent_rewrite_as_the_service_role_is_stopped_or_named(
    consent: Consent, owned: Owned, public_key: str, tmp_path: Path
) -> None:
    checkpoints = await history(consent, tmp_path)
    conn = await asyncpg.connect(owned.role_dsn)
    try:
        await conn.execute(f'SET search_path TO "{owned.schema}"')
        await rewrite_withdrawal_as_grant(conn, consent.ctx.principal("usr_a"))
    except asyncpg.InsufficientPrivilegeError:
        return  # the runtime role may not rewrite the ledger at all (least privilege)
    finally:
        await conn.close()
    report = await consent.audit(public_key, checkpoints)
    assert not report.ok
    assert (report.bad_entry or "").startswith("subject usr_a entry 2 ")


async def test_a_consistent_rewrite_as_a_superuser_is_named_by_verify_ledger(
    consent: Consent, owned: Owned, public_key: str, tmp_path: Path
) -> None:
    checkpoints = await history(consent, tmp_path)
    conn = await asyncpg.connect(owned.admin_dsn)
    try:
        await conn.execute(f'SET search_path TO "{owned.schema}"')
        withdrawal = (await store.ledger(conn, consent.ctx.principal("usr_a")))[1].event_id
        await rewrite_withdrawal_as_grant(conn, consent.ctx.principal("usr_a"))
    finally:
        await conn.close()
    argv = ["verify-ledger", "--schema", owned.schema, "--public-key", public_key]
    result = await asyncio.to_thread(
        CliRunner().invoke, app, [*argv, "--checkpoints", str(checkpoints)]
    )
    assert result.exit_code == 1, result.output
    assert f"subject usr_a entry 2 (event {withdrawal}" in " ".join(result.output.split())
