"""Deletion certificates against their signed checkpoints: a chain rewritten consistently
with SQL (as a superuser) is named by `privacy-plane verify-certificates`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from services.retention.app import MIGRATIONS
from services.retention.checkpoints import CERTIFICATES
from services.retention.context import Context
from services.retention.domain.certificates import (
    GENESIS,
    Certificate,
    certificate_hash,
    verify_chain,
)
from services.retention.settings import RetentionSettings
from services.retention.store.certificates import append_certificate, chain
from shared.catalogue import load_retention
from shared.cli import app
from shared.evidence.loop import checkpoint_now
from shared.plumbing import db
from shared.plumbing.clock import ManualClock
from tests.db.evidence.conftest import export
from tests.support.infra import Infra

pytestmark = pytest.mark.db

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def certificate(n: int) -> Certificate:
    return Certificate(
        job_id=f"job_{n}",
        subject_id=f"usr_{n}",
        owner="crm",
        category="crm_data",
        mode="delete",
        reason="erasure_request",
        request_id=f"req_{n}",
        attempt=1,
        issued_at=T0,
        completed_at=T0 + timedelta(hours=n),
        records_deleted=n,
        receipt_id=f"rcpt_{n}",
    )


@contextlib.asynccontextmanager
async def open_retention(
    dsn: str, schema: str, key_file: Path
) -> AsyncIterator[tuple[Context, asyncpg.Pool]]:
    """The retention context on `schema` (migrated), checkpoints signed with `key_file`."""
    settings = RetentionSettings(
        kafka_bootstrap_servers="unused:9092",
        database_url=dsn,
        db_schema=schema,
        api_token="t" * 16,
        checkpoint_key_file=key_file,
    )
    ctx = Context(settings=settings, rules=load_retention(), clock=ManualClock(T0))
    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn, schema, MIGRATIONS)
    finally:
        await conn.close()
    pool = await db.create_pool(dsn, schema, min_size=1, max_size=2)
    await ctx.open(pool)
    try:
        yield ctx, pool
    finally:
        await ctx.close()
        await pool.close()


async def test_a_rewritten_certificate_chain_is_named(
    infra: Infra, schema: str, key_file: Path, public_key: str, tmp_path: Path
) -> None:
    async with open_retention(infra.database_url, schema, key_file) as (ctx, pool):
        settings = ctx.settings
        for n in (1, 2, 3):
            async with pool.acquire() as c, c.transaction():
                await append_certificate(c, certificate(n))
        made = await asyncio.to_thread(
            CliRunner().invoke,
            app,
            ["checkpoint", "retention", "--schema", schema, "--key-file", str(key_file)],
            env={"PP_DATABASE_URL": infra.database_url},
        )
        assert "checkpoint 1 of retention.certificates: 3 entries" in made.output
        assert await checkpoint_now(ctx, CERTIFICATES) is None  # nothing new since
        async with pool.acquire() as c, c.transaction():
            await append_certificate(c, certificate(4))
        checkpoints = await export(pool, settings.topics.privacy_audit, tmp_path / "cps.jsonl")
        async with pool.acquire() as c, c.transaction():
            # certificate 2 now says 0 records were deleted; every later hash is recomputed
            await c.execute("ALTER TABLE certificates DISABLE TRIGGER USER")
            prev = GENESIS
            for n in (1, 2, 3, 4):
                cert = certificate(n)
                if n == 2:
                    cert = cert.model_copy(update={"records_deleted": 0})
                digest = certificate_hash(prev, cert)
                await c.execute(
                    "UPDATE certificates SET body = $2::jsonb, prev_hash = $3, hash = $4"
                    " WHERE job_id = $1",
                    cert.job_id, cert.model_dump_json(), prev, digest,
                )  # fmt: skip
                prev = digest
            await c.execute("ALTER TABLE certificates ENABLE TRIGGER USER")
        async with pool.acquire() as c:
            assert verify_chain(await chain(c)) == []  # the hash chain alone is fooled
    argv = ["verify-certificates", "--schema", schema, "--public-key", public_key]
    env = {"PP_DATABASE_URL": infra.database_url}
    result = await asyncio.to_thread(
        CliRunner().invoke, app, [*argv, "--checkpoints", str(checkpoints)], env=env
    )
    text = " ".join(result.output.split())
    assert result.exit_code == 1, text
    assert "certificate 2 (job job_2) does not match checkpoint 1" in text
