"""The production path end to end: db-init's two roles, `privacy-plane migrate` as the owner, and
the consent service connected as its runtime role, which may not migrate, alter or rewrite its
ledger, and still takes a person through sign-up, grant and erasure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from services.consent.app import build_runtime
from services.consent.rebuild import rebuild
from services.consent.settings import ConsentSettings
from services.export.app import build_runtime as build_export
from services.export.settings import default_owners
from services.retention.api import verify_certificates
from shared.cli.commands import app as cli
from shared.contract.codec import decode
from shared.contract.envelope import CloudEvent
from shared.contract.events import Evidence
from shared.contract.topics import Topics
from shared.plumbing.clock import ManualClock
from shared.plumbing.migrator import NotMigrated
from tests.integration.export import harness as export
from tests.integration.retention import harness as retention
from tests.support import events as make
from tests.support.infra import Infra
from tests.support.kafka import produce, read_topic
from tests.support.roles import Fresh, fresh_database, run_grants

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


@pytest.fixture
async def fresh(infra: Infra) -> AsyncIterator[Fresh]:
    async with fresh_database(infra.database_url) as made:
        await made.grants("consent")
        yield made


def settings_for(fresh: Fresh, infra: Infra, topics: Topics) -> ConsentSettings:
    """The service as compose runs it: the runtime role's URL, no migrating at start."""
    return ConsentSettings(
        kafka_bootstrap_servers=infra.kafka,
        database_url=fresh.runtime_dsn("consent"),
        db_schema=fresh.roles["consent"].schema,
        group_id=f"g-{fresh.tid}",
        topics=topics,
        api_token="least-privilege-token",
        ledger_key="ledger-test-key-0123",
        batch_timeout_ms=20,
        migrate_on_start=False,
    )


async def test_the_service_refuses_to_start_on_a_schema_the_owner_has_not_migrated(
    infra: Infra, topics: Topics, fresh: Fresh
) -> None:
    runtime = build_runtime(settings_for(fresh, infra, topics))
    with pytest.raises(NotMigrated, match="privacy-plane migrate --service consent"):
        await runtime.start()
    # and it may not do it itself: its role creates nothing in the schema
    allowed = settings_for(fresh, infra, topics).model_copy(update={"migrate_on_start": True})
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await build_runtime(allowed).start()


async def test_consent_runs_end_to_end_as_its_runtime_role_after_the_owner_migrated(
    infra: Infra, topics: Topics, fresh: Fresh, monkeypatch: pytest.MonkeyPatch
) -> None:
    roles = fresh.roles["consent"]
    monkeypatch.setenv("CONSENT_MIGRATE_DATABASE_URL", fresh.owner_dsn("consent"))
    monkeypatch.setenv("CONSENT_DATABASE_URL", fresh.runtime_dsn("consent"))
    monkeypatch.setenv("CONSENT_DB_SCHEMA", roles.schema)
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["migrate", "--service", "consent"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "consent/migrations/0009_ledger_scrub.sql" in result.output

    runtime = build_runtime(
        settings_for(fresh, infra, topics), ManualClock(T0 + timedelta(hours=1))
    )
    await runtime.start()
    owner = await fresh.connect_owner("consent")
    try:
        assert runtime.readiness.problems["migrations"] is None
        s = "usr_least"

        def mine(records: list[Any]) -> list[Any]:
            return [r for r in records if r.key == s.encode()]

        grant = make.granted(
            s, "personalisation", via="web_form", at=T0 + timedelta(minutes=1),
            evidence=Evidence(user_agent="Firefox/140"),
        )  # fmt: skip
        erasure = make.erasure(
            s, "req_least", verified_by="support:1", source="portal", at=T0 + timedelta(minutes=2)
        )
        steps: list[tuple[str, CloudEvent[Any]]] = [
            (
                topics.accounts_lifecycle,
                make.signed_up(s, "acc_least", at=T0, consents={"marketing_email": True}),
            ),
            (topics.consent_changes, grant),
            (topics.privacy_requests, erasure),
        ]
        for n, (topic, event) in enumerate(steps, 1):  # one at a time: topics do not interleave
            await produce(infra.kafka, topic, [event])
            states = await read_topic(infra.kafka, topics.consent_state, until=at_least(mine, n))
        assert [r.value is None for r in mine(states)] == [False, False, True]  # tombstone
        assert decode(mine(states)[0].value).subject == s
        rows = await wait_rows(
            owner, 'SELECT subject_id, evidence, hash FROM "{}".ledger', roles.schema, 2
        )
        assert all(r["subject_id"] is None and r["evidence"] is None for r in rows)  # scrubbed
        assert all(r["hash"] for r in rows)  # the chain stays
        assert await owner.fetchval(f'SELECT count(*) FROM "{roles.schema}".suppressed') == 1
        tables = await owner.fetch(
            "SELECT tableowner FROM pg_tables WHERE schemaname = $1", roles.schema
        )
        assert {t["tableowner"] for t in tables} == {roles.owner}
    finally:
        await owner.close()
        await runtime.stop()


async def test_a_rebuild_runs_as_the_owner_and_leaves_a_schema_the_runtime_role_can_use(
    infra: Infra, topics: Topics, fresh: Fresh
) -> None:
    """Production's rebuild: the DBA makes the new schema (grants.sql), the rebuild writes it as
    the owner and grants the runtime role, which then reads but cannot rewrite the ledger."""
    assert await fresh.migrate("consent")
    s = "usr_rebuilt"
    await produce(
        infra.kafka,
        topics.accounts_lifecycle,
        [make.signed_up(s, "acc_rebuilt", at=T0, consents={"marketing_email": True})],
    )
    roles = fresh.roles["consent"]
    into = replace(roles, schema=f"{roles.schema}_rebuilt")
    await run_grants(fresh, into, roles.runtime_pw)
    settings = settings_for(fresh, infra, topics).model_copy(
        update={"migrate_database_url": SecretStr(fresh.owner_dsn("consent"))}
    )
    assert await rebuild(settings, into.schema, ManualClock(T0), within_s=60) == 1
    conn = await fresh.connect_runtime("consent")
    try:
        ledger = f'"{into.schema}".ledger'
        assert await conn.fetchval(f"SELECT count(*) FROM {ledger}") >= 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f"DELETE FROM {ledger}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f"TRUNCATE {ledger}")
    finally:
        await conn.close()


def at_least(mine: Callable[[list[Any]], list[Any]], n: int) -> Callable[[list[Any]], bool]:
    return lambda records: len(mine(records)) >= n


async def wait_rows(
    conn: asyncpg.Connection, query: str, schema: str, count: int, within: float = 30
) -> list[asyncpg.Record]:
    deadline = time.monotonic() + within
    while True:
        rows = await conn.fetch(query.format(schema))
        if len(rows) >= count and all(r["subject_id"] is None for r in rows):
            return list(rows)
        if time.monotonic() > deadline:
            return list(rows)
        await asyncio.sleep(0.05)


def on_fresh_database(infra: Infra, fresh: Fresh) -> Infra:
    """The infrastructure with the test's own database (the harnesses read it as superuser)."""
    s = fresh.server
    return replace(infra, database_url=s.dsn(s.user, s.password, fresh.database))


async def test_retention_certifies_a_deletion_as_its_runtime_role(
    infra: Infra, topics: Topics, fresh: Fresh
) -> None:
    await fresh.grants("retention")
    assert await fresh.migrate("retention")
    roles = fresh.roles["retention"]
    h = await retention.Harness.start(
        on_fresh_database(infra, fresh),
        topics,
        roles.schema,
        database_url=fresh.runtime_dsn("retention"),
        migrate_on_start=False,
    )
    try:
        await h.send(
            topics.accounts_lifecycle,
            retention.signed_up("usr_lp", "acc_lp"),
            retention.closed("usr_lp", "acc_lp"),
        )
        job = (await h.jobs())[0]
        await h.send(
            topics.privacy_receipts, retention.completed("usr_lp", job["job_id"], "marketing", 7)
        )
        certificates = await retention.eventually(
            lambda: h.fetch("SELECT job_id FROM certificates"), bool
        )
        assert [c["job_id"] for c in certificates] == [job["job_id"]]
        async with h.runtime.pool.acquire() as conn:  # the service's own connections
            assert await verify_certificates(conn) == []
            for statement in (
                "ALTER TABLE certificates DISABLE TRIGGER certificates_append_only",
                "UPDATE certificates SET body = body",
                "TRUNCATE certificates",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
    finally:
        await h.stop()


async def test_export_assembles_a_bundle_as_its_runtime_role(
    infra: Infra, topics: Topics, fresh: Fresh, tmp_path: Path
) -> None:
    await fresh.grants("export")
    assert await fresh.migrate("export")
    roles = fresh.roles["export"]
    on_fresh = on_fresh_database(infra, fresh)
    settings = export.settings_for(on_fresh, topics, roles.schema, tmp_path).model_copy(
        update={"database_url": SecretStr(fresh.runtime_dsn("export")), "migrate_on_start": False}
    )
    runtime = build_export(settings, ManualClock())
    await runtime.start()
    try:
        client = cast(Any, None)  # the test reads no HTTP route
        h = export.Harness(on_fresh, topics, roles.schema, settings, ManualClock(), runtime, client)
        await h.request_export("usr_lp", "req_lp")
        jobs = await h.jobs("req_lp", len(default_owners()))
        parts = [
            part
            for job in jobs.values()
            for category in job.data.categories
            for part in export.inline_parts(
                job, category, export.records_for(job.data.owner, category, 2)
            )
        ]
        await h.send(*parts)
        done = await h.wait_status("req_lp", "completed")
        assert done.data.bundle_id
    finally:
        await runtime.stop()
